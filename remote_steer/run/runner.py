"""The pipeline, staged: data → prompts → extraction → evaluation → results → summary.

``prepare`` does everything that can fail on bad input (spec, datasets, tokenizers,
layer ranges) before anything is written; ``run_experiment`` then creates the run
directory and works through models × concepts, checkpointing each finished chunk,
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from remote_steer.analysis.statistics import best_layers
from remote_steer.data.loading import load_concept
from remote_steer.data.preprocess import ConceptSplit, preprocess
from remote_steer.data.prompts import encode_generation_items, encode_items, supports_thinking
from remote_steer.display import Display, NullDisplay
from remote_steer.engines.generation_plain import generation_summary
from remote_steer.engines.sweep_plain import SteerConfig
from remote_steer.errors import DataError, RemoteSteerError, SpecError, filesystem_error, filesystem_errors
from remote_steer.models.loading import (
    LoadedModel,
    ModelSource,
    load_config,
    load_model,
    load_tokenizer,
    remote_id,
    resolve,
)
from remote_steer.remote.backend import Backend
from remote_steer.remote.ndif import journal_traffic, probe_key
from remote_steer.remote.status import client_versions, cold_line, require_hosted, server_versions, skew_line
from remote_steer.run import (
    estimate,
    extend,
    letter_control,
    methods_stage,
    predicted_window,
    rigour,
    side_effects,
    strength_check,
    threads,
)
from remote_steer.run.chunked import chunk_size, recorded_chunk_size
from remote_steer.run.context import (  # Plan, PreparedModel: importable from here too
    Counts,
    Plan,
    PreparedModel,
    RunContext,
)
from remote_steer.run.generation_stage import GENERATION_TABLE, generation_stage
from remote_steer.run.spec import ExperimentSpec, ModelSpec, spec_location, validate
from remote_steer.run.sweep_stage import LOGIT_TABLE, sweep_stage
from remote_steer.rundir import Provenance, RunDir, package_versions, where_computed
from remote_steer.rundir.parts import UNRECORDED


@dataclass
class RunOutcome:
    run_dir: Path
    results: pd.DataFrame
    summary: pd.DataFrame
    resumed: bool
    computed_parts: int
    skipped_parts: int
    seconds: float
    generation: pd.DataFrame = field(default_factory=pd.DataFrame)
    slow: str | None = None  # why the run took far longer than its estimate (run/threads.py)


def prepare(spec: ExperimentSpec, display: Display | None = None) -> Plan:
    """Validate everything and tokenize every item, writing nothing."""
    display = display or NullDisplay()
    validate(spec)  # every field that needs no file: before any data is read
    splits = {concept: _split(spec, concept, display) for concept in spec.data.concepts}
    sources = {}
    for model_spec in spec.models:
        _note_toy_build(model_spec.name, display)
        sources[model_spec.name] = resolve(model_spec.name, model_spec.revision)
    servers = _check_hosts(spec, sources, display)
    models = []
    said: set[str] = set()
    for model_spec in spec.models:
        source = sources[model_spec.name]
        client_model = None
        if model_spec.backend == "remote":
            # ...and does the server take the key? NDIF checks it only on submission,
            # so a one-token probe job per model is the smallest thing that can tell
            # (each model's replica may sit behind its own queue); said once per host.
            backend = make_backend(model_spec)
            if backend.host not in said:
                said.add(str(backend.host))
                display.note(f"Checking the API key with {backend.host} (a one-token probe job per remote model)")
            client_model = load_model(source, dtype=model_spec.dtype, device=model_spec.device, weights=False)
            probe_key(backend, client_model)
        models.append(_prepare_model(spec, model_spec, source, client_model, splits))
    return Plan(spec, splits, models, servers=servers)


def _split(spec: ExperimentSpec, concept: str, display: Display) -> ConceptSplit:
    """One concept's items, read, flipped where the spec says, and split train/test."""
    try:
        raw = load_concept(concept, spec.data.source, spec.data.files)
    except DataError as error:
        if not str(error).startswith("unknown concept"):
            raise
        raise DataError(f"{spec_location(spec.path, 'data.concepts')}: data.concepts: {error}") from None
    if concept in spec.data.flip:  # polarity reversed: the other answer is the behaviour
        raw = [
            dataclasses.replace(r, answer_matching=r.answer_not_matching, answer_not_matching=r.answer_matching)
            for r in raw
        ]
    split = preprocess(
        raw, concept, seed=spec.seed, test_fraction=spec.data.test_fraction, max_items=spec.data.max_items
    )
    if len(split.train) < 1 or len(split.test) < 2:
        raise SpecError(
            f"{spec.path or 'spec'}: data: concept {concept!r} kept {len(split.train)} train and "
            f"{len(split.test)} test items; expected at least 1 train and 2 test items"
        )
    display.note(split.report.summary())
    return split


def _check_hosts(spec: ExperimentSpec, sources: dict[str, ModelSource], display: Display) -> dict[str, dict[str, str]]:
    """Before any work is sent and any file is written: is every remote model served where
    it is going (the open /status, once per model), and do the versions agree (the open
    /env, once per host)? Returns each host's python and nnsight, as its /env says."""
    servers: dict[str, dict[str, str]] = {}
    hosts: set[str] = set()
    for model_spec in spec.models:
        if model_spec.backend != "remote":
            continue
        source = sources[model_spec.name]
        backend = make_backend(model_spec)
        assert backend.host is not None  # a remote Backend resolves its host on construction
        hosting = require_hosted(backend.host, remote_id(source), model_spec.name)
        if hosting.cold:
            params = source.card.params_total_b if source.card else None
            display.note(cold_line(model_spec.name, backend.host, params))
        if backend.host in hosts:
            continue
        hosts.add(backend.host)
        server = server_versions(backend.host)
        if server is not None:
            servers[backend.host] = server
            if skew := skew_line(backend.host, client_versions(), server):
                display.note(skew)
    return servers


def _prepare_model(
    spec: ExperimentSpec,
    model_spec: ModelSpec,
    source: ModelSource,
    client_model: LoadedModel | None,
    splits: dict[str, ConceptSplit],
) -> PreparedModel:
    """One model's layers, labels and tokenized items (no weights are loaded)."""
    config = load_config(source)
    text_config = getattr(config, "text_config", config)
    n_layers = int(text_config.num_hidden_layers)
    spec.check_layers(model_spec.name, n_layers)
    tokenizer = load_tokenizer(source)
    prepared = PreparedModel(
        spec=model_spec,
        source=source,
        n_layers=n_layers,
        hidden_size=int(text_config.hidden_size),
        sweep_layers=spec.sweep_layers(n_layers, model_spec),
        generation_layers=spec.generation_layers(n_layers),
        training=model_spec.training or (source.card.training if source.card else "unknown"),
        client_model=client_model,
    )
    thinking = spec.generation.thinking
    prepared.thinking = supports_thinking(tokenizer) if thinking is None else bool(thinking)
    for concept, split in splits.items():
        prepared.encoded[concept] = (encode_items(tokenizer, split.train), encode_items(tokenizer, split.test))
        if "generation" in spec.evaluation.modes and spec.generation.covers(model_spec.name, concept):
            # generation starts at the assistant turn, never after a shared answer prefix
            prepared.generation_encoded[concept] = encode_generation_items(
                tokenizer, split.test, enable_thinking=prepared.thinking
            )
    return prepared


def _note_toy_build(name: str, display: Display) -> None:
    from remote_steer.models.registry import lookup
    from remote_steer.models.toy import toy_dir

    card = lookup(name)
    if card is not None and card.toy and not (toy_dir(card.name) / "remote_steer_toy.json").exists():
        display.note(f"Building random-weight toy {card.name} (first use, about 15 s; cached in {toy_dir(card.name)})")
    if card is not None and card.embedded:
        from remote_steer.models.real_small import is_built, real_dir

        if not is_built(card.name):
            display.note(f"Building {card.name} from its GGUF (first use, about 15 s; cached in {real_dir(card.name)})")


def make_backend(model_spec: ModelSpec, run_dir: Path | None = None) -> Backend:
    return Backend(
        model_spec.backend,
        host=model_spec.host,
        journal_dir=RunDir(run_dir).jobs_dir if run_dir is not None else None,
    )


def default_run_dir(spec: ExperimentSpec) -> Path:
    return Path(spec.output_dir) / spec.name


def run_experiment(
    spec: ExperimentSpec,
    *,
    display: Display | None = None,
    run_dir: Path | None = None,
    fresh: bool = False,
    after_part: Callable[[], None] | None = None,
) -> RunOutcome:
    """Run (or resume) the experiment. ``after_part`` is called after each checkpoint.

    One process writes a run directory at a time (its lock); a second refuses in one
    line naming the first."""
    started = time.perf_counter()
    display = display or NullDisplay()
    plan = prepare(spec, display)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(spec)
    store = RunDir(run_dir)
    new_dir = fresh or not run_dir.exists()
    made = strength_check.first_missing(run_dir)  # what a refused strength takes away again
    with filesystem_errors(f"write the run directory {run_dir}"):
        run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with store.lock():
            store.clear_temporaries()
            before = store.manifest_path.read_bytes() if store.manifest_path.exists() else None
            try:
                return _locked_run(plan, store, display, fresh, new_dir, after_part, started)
            except strength_check.StrengthRefused:  # an existing run gets its record back
                strength_check.undo_open(None, store.manifest_path, before)
                raise
    except strength_check.StrengthRefused:  # and a run directory this run made goes, its lock released
        strength_check.undo_open(made, store.manifest_path, None)
        raise
    except OSError:
        if new_dir and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # the first write failed: leave no empty run directory behind
        raise


def _open(plan: Plan, store: RunDir, fresh: bool, display: Display) -> bool:
    """Clear (``fresh``) or reconcile the run directory with the spec, then open its
    record; refuses to relabel: see ``_refuse_relabel``. True if resuming."""
    spec, run_dir = plan.spec, store.root
    layers = {
        m.spec.label: {"sweep_layers": m.sweep_layers, "generation_layers": m.generation_layers} for m in plan.models
    }
    with filesystem_errors(f"write the run directory {run_dir}"):
        if fresh:
            for child in run_dir.iterdir():
                if child != store.lock_path:
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        _refuse_relabel(plan, store)
        # reconcile refuses changes that break saved results and specs that drop what the run holds
        changed = extend.reconcile(store, spec.to_dict(), layers)
        resumed = store.open_run(
            spec.to_dict(), spec.seed, {c: dataclasses.asdict(s.report) for c, s in plan.splits.items()}
        )
    if changed:
        display.note(f"Extending the run: {', '.join(changed)} changed; computing only what is missing")
    for table in (LOGIT_TABLE, GENERATION_TABLE, rigour.CONTROL_TABLE, rigour.DECODABILITY_TABLE):
        store.set_aside_damaged(table, display.note)  # decodability: its concept's extraction runs again
    return resumed


def _refuse_relabel(plan: Plan, store: RunDir) -> None:
    """A model whose saved parts were computed on another backend or host than the spec
    now names is refused in one line: nothing is computed and nothing relabelled."""
    for prepared in plan.models:
        name = prepared.spec.label
        held = _computed_on(store, name)
        asked = _provenance(make_backend(prepared.spec), prepared.spec.engine, {}).where
        if held and asked not in held:
            copy = f"{store.root.name}-{prepared.spec.backend}"
            raise SpecError(
                f"{store.root}: its {name} results were computed on {' and '.join(held)}, not {asked}; nothing "
                f"computed or relabelled. For a {prepared.spec.backend} copy use --name {copy} (or another "
                "--output-dir)"
            )


def _computed_on(store: RunDir, name: str) -> list[str]:
    """Where this model's saved parts were computed (the first part of each table says,
    every part of a model being computed in one place); [] when it has none or they
    predate provenance."""
    manifest = store.read_manifest()
    for table in (LOGIT_TABLE, GENERATION_TABLE):
        for concept in manifest.concepts if manifest is not None else []:
            parts = store.part_files(table, name, concept)
            if parts:
                try:
                    frame = pd.read_parquet(parts[0])
                except Exception:  # noqa: BLE001 - a damaged part is set aside later, not read here
                    continue
                held = [w for w in where_computed(frame) if not w.startswith(UNRECORDED)]
                if held:
                    return held
    return []


def _locked_run(
    plan: Plan,
    store: RunDir,
    display: Display,
    fresh: bool,
    new_dir: bool,
    after_part: Callable[[], None] | None,
    started: float,
) -> RunOutcome:
    spec, run_dir = plan.spec, store.root
    try:
        resumed = _open(plan, store, fresh, display)
    except OSError:
        if new_dir:
            for child in run_dir.iterdir():
                if child != store.lock_path:
                    shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        raise
    display.note(f"{'Resuming' if resumed else 'Writing'} run in {run_dir}")
    cpu_threads = _set_threads(plan, display)
    display.note(
        "Bars count rows: one held-out item under one vector at one layer × strength, plus one unsteered "
        "row per item (extraction bars count training pairs)."
    )
    display.plan_steps(run_steps(plan))
    work = estimate.plan_work(plan)
    plan.pace.update(work=work, done=0, seconds=0.0, gflop=0.0, steps=0)
    if (line := estimate.start_note(plan, work)) is not None:
        display.note(line)
    estimated = line is not None  # local CPU runs: a slow one says why when it ends
    counts = Counts()
    try:
        traffic = _run_models(plan, store, display, counts, after_part)
    finally:
        if cpu_threads is not None:  # torch's threads are the caller's again
            threads.restore(cpu_threads)
    results = store.consolidate(LOGIT_TABLE)  # everything saved, this spec's modes or earlier ones
    if spec.controls.any and "logit" in spec.evaluation.modes:
        store.consolidate(rigour.CONTROL_TABLE)
    norms = rigour.write_norms(store, plan)
    store.consolidate(rigour.DECODABILITY_TABLE)  # analysis/decodability.py, from the extraction pass
    summary = best_layers(results) if len(results) else pd.DataFrame()
    store.write_summary(summary)
    if spec.evaluation.side_effects:
        store.consolidate(side_effects.SIDE_EFFECTS_TABLE)
    if spec.evaluation.methods:
        store.consolidate(methods_stage.METHODS_TABLE)
    if spec.evaluation.ablation and len(summary):
        from remote_steer.run import ablation_stage

        ablation_stage.write(plan, store, display)
    generation = store.consolidate(GENERATION_TABLE)
    seconds = time.perf_counter() - started
    store.update_manifest(status="complete", error=None, seconds=round(seconds, 2))
    _show_summary(display, summary, plan, results, norms)
    if len(results):
        letter_control.show_letters(display, store, results, summary)
    _show_generation(display, generation, plan)
    _show_traffic(display, traffic)
    outcome = RunOutcome(run_dir, results, summary, resumed, counts.computed, counts.skipped, seconds, generation)
    if estimated and cpu_threads is not None and plan.pace.get("gflop"):
        expected = estimate.seconds_for(plan.pace["gflop"], plan.pace["steps"])
        outcome.slow = threads.slow_note(
            plan.pace["seconds"], expected, cpu_threads.threads, cpu_threads.cpus, threads.load_average()
        )
    return outcome


def _run_models(
    plan: Plan, store: RunDir, display: Display, counts: Counts, after_part: Callable[[], None] | None
) -> dict[str, Any]:
    """Every model in turn; the manifest records each one's traffic and facts as it goes,
    and ``interrupted`` with the error if one stops the run."""
    manifest = store.read_manifest()
    model_info: dict[str, Any] = dict(manifest.models if manifest is not None else {})
    traffic: dict[str, Any] = {}
    versions = package_versions()
    if plan.spec.evaluation.layer_window == predicted_window.PREDICTED:
        display.note(predicted_window.CAVEAT)
    try:
        for prepared in plan.models:
            backend = make_backend(prepared.spec, store.root)
            backend.on_note = display.note
            store.provenance[prepared.spec.label] = _provenance(backend, prepared.spec.engine, versions, plan.servers)
            try:
                info = _run_model(RunContext(plan, prepared, store, backend, display, counts, after_part))
            finally:
                traffic[prepared.spec.label] = _model_traffic(backend, store, prepared.spec.name)
                store.update_manifest(traffic=traffic)
            model_info[prepared.spec.label] = info
            store.update_manifest(models=model_info)
    except strength_check.StrengthRefused:  # the spec never ran: run_experiment puts the run back as it was
        raise
    except BaseException as error:
        try:
            store.update_manifest(status="interrupted", error=f"{type(error).__name__}: {error}")
        except OSError:  # the disk that failed the run may fail this too; the parts are whole either way
            pass
        if isinstance(error, OSError) and not isinstance(error, RemoteSteerError):
            raise filesystem_error(error, "write") from None
        raise
    return traffic


def _set_threads(plan: Plan, display: Display) -> threads.ThreadChoice | None:
    """Local CPU runs: torch's thread count from the CPUs free (run/threads.py), said in
    the header. None when every model runs elsewhere."""
    if not any(m.spec.backend == "local" and m.spec.device == "cpu" for m in plan.models):
        return None
    import torch

    choice = threads.choose(
        plan.spec.threads, "threads setting", load=threads.load_average(), running=threads.running_others()
    )
    choice = dataclasses.replace(choice, previous=torch.get_num_threads())
    torch.set_num_threads(choice.threads)
    display.note(choice.header())
    return choice


def _provenance(
    backend: Backend, engine: str, versions: dict[str, str], servers: dict[str, dict[str, str]] | None = None
) -> Provenance:
    """Where this session computes a model's parts (a host only for a remote backend;
    with ``servers``, the server's python and nnsight as ``prepare`` read them from its
    open ``/env``, once per host)."""
    if not backend.is_remote:
        return Provenance(backend.kind, None, engine, client=versions)
    assert backend.host is not None  # a remote Backend resolves its host on construction
    return Provenance(backend.kind, backend.host, engine, server=(servers or {}).get(backend.host, {}), client=versions)


def _model_traffic(backend: Backend, store: RunDir, name: str) -> dict[str, Any]:
    """Per stage: remotely, every journaled submission of this run directory, a killed
    client's and a resumed one's included; locally, this process's requests."""
    if backend.is_remote:
        return journal_traffic(store.jobs_dir).get(name, {})
    return {stage: t.as_dict() for stage, t in backend.traffic.items()}


def run_steps(plan: Plan) -> list[str]:
    """Every stage of the run in order, as its progress bar names it."""
    stages = ["extract"] + [
        s for m, s in (("logit", "sweep"), ("generation", "generate")) if m in plan.spec.evaluation.modes
    ]
    return [f"{m.spec.name} · {c} · {s}" for m in plan.models for c in plan.splits for s in stages]


def _run_model(ctx: RunContext) -> dict[str, Any]:
    """Every concept of one model, stage by stage; returns the model's facts for the record."""
    spec, prepared, backend = ctx.spec, ctx.prepared, ctx.backend
    configs = rigour.configs_for(spec, prepared)
    revision = None
    for concept in ctx.plan.splits:
        revision = _run_concept(ctx, concept, configs)
    side_effects.stage(ctx)  # [evaluation] side_effects: every concept's best layer is known now
    return {
        "revision": ctx.loaded.revision if ctx.loaded is not None else revision,
        "location": prepared.source.location,
        "random_weight_toy": prepared.source.is_toy,
        "n_layers": prepared.n_layers,
        "hidden_size": prepared.hidden_size,
        "training": prepared.training,
        "sweep_layers": prepared.sweep_layers,
        "generation_layers": prepared.generation_layers if "generation" in spec.evaluation.modes else [],
        "generation_thinking": prepared.thinking if prepared.generation_encoded else None,
        "backend": backend.kind,
        "engine": prepared.spec.engine,
        "host": backend.host if backend.is_remote else None,
        "dtype": prepared.spec.dtype,
        "device": prepared.spec.device,
    }


def _run_concept(ctx: RunContext, concept: str, configs: list[SteerConfig]) -> str | None:
    """One model × concept: extraction, the sweep with its controls and letter control,
    then generation. Returns the revision the vectors were extracted from."""
    spec, prepared, store = ctx.spec, ctx.prepared, ctx.store
    step_started, computed_before = time.perf_counter(), ctx.counts.computed
    sweeping = "logit" in spec.evaluation.modes
    letters_wanted = (  # the letter control (real models only) rides on the extraction and the sweep
        sweeping and not prepared.source.is_toy and not letter_control.part_path(store, ctx.name, concept).exists()
    )
    vectors, extra = rigour.vectors_for(ctx, concept, letters=letters_wanted)
    letters = extra.pop(rigour.LETTERS, None)
    strength_check.check(spec, prepared, concept, vectors)  # before the sweep computes anything
    configs = predicted_window.window_configs(spec, store, prepared, concept, configs, ctx.display)
    if sweeping:
        joint = _joint_pass(ctx, concept, vectors, extra, letters, configs)
        sweep_stage(ctx, concept, vectors, configs, joint, hold=lambda: side_effects.hold_for(ctx, concept))
        if joint is not None:
            joint.write_letters(store, prepared.encoded[concept][1], vectors)
        rigour.controls_stage(ctx, concept, vectors, extra, configs)
        if joint is not None:  # chunks the joint pass computed are not "already done"
            ctx.counts.skipped -= joint.control_parts
        if not prepared.source.is_toy:  # letter control (run/letter_control.py): real models only
            # already written by the joint pass unless the sweep was resumed or extended
            letter_control.run_letter_control(ctx, concept, vectors)
        methods_stage.stage(ctx, concept, ctx.readouts.pop(concept, None))
        if not side_effects.wanted(ctx):  # nothing else steers this concept's kept prompt passes
            ctx.held.pop(concept, None)
    if "generation" in spec.evaluation.modes and concept in prepared.generation_encoded:
        generation_stage(ctx, concept, vectors)
    _step_done(ctx.plan, ctx.display, time.perf_counter() - step_started, ctx.counts.computed > computed_before)
    return vectors.revision


def _step_done(plan: Plan, display: Display, seconds: float, computed: bool) -> None:
    """After each model × concept: what is left, at the pace this run has measured."""
    pace = plan.pace
    if not pace.get("work"):
        return
    pace["done"] += 1
    if computed:
        pace["seconds"] += seconds
        pace["gflop"] += pace["work"][pace["done"] - 1].gflop
        pace["steps"] += 1
    line = estimate.progress_note(pace["work"], pace["done"], pace["seconds"], pace["gflop"])
    if line is not None:
        display.note(line)


def _joint_pass(ctx: RunContext, concept, vectors, extra, letters, configs) -> rigour.JointPass | None:
    """The sweep's chunks carry the controls and the letter control too (one prompt pass
    for all), with the fast engine and when the controls' chunks match the sweep's."""
    spec, prepared, store, name = ctx.spec, ctx.prepared, ctx.store, ctx.name
    if prepared.spec.engine != "fast" or not (spec.controls.any or letters is not None):
        return None
    joint = rigour.JointPass(ctx, concept, vectors, extra, letters, configs)
    if not joint.useful:
        return None
    if joint.kinds:
        _, test = prepared.encoded[concept]
        size = lambda: chunk_size(spec, test, len(configs))  # noqa: E731
        sweep_size = recorded_chunk_size(store, LOGIT_TABLE, name, concept, size)
        if recorded_chunk_size(store, rigour.CONTROL_TABLE, name, concept, size) != sweep_size:
            return None
    return joint


def _show_generation(display: Display, generation: pd.DataFrame, plan: Plan) -> None:
    if generation.empty:
        return
    cells = generation_summary(generation)
    rows = [
        (
            r.model,
            r.dataset,
            r.layer,
            r.strength,
            r.validity_rate,
            r.behavior_rate,
            r.behavior_rate_all,
            r.baseline_behavior_rate,
            r.n_items,
        )
        for r in cells.itertuples()
    ]
    toys = any(m.source.is_toy for m in plan.models)
    caption = (
        "valid: clean A/B answers. behaviour: matching among valid answers; all: matching among all "
        "answers, invalid counted as no. baseline: unsteered, among valid."
    )
    if toys:
        caption += " Random-weight toys rarely give a parsable answer; validity 0 is expected for them."
    display.table(
        "Generation under steering: validity and behaviour rate",
        ["model", "dataset", "layer", "strength", "valid", "behaviour", "all", "baseline", "items"],
        rows,
        caption,
    )


def _show_traffic(display: Display, traffic: dict[str, Any]) -> None:
    rows = [
        (model, stage, t["requests"], t["bytes_sent"], t["bytes_received"], t["server_seconds"], t["retries"])
        for model, stages in traffic.items()
        for stage, t in stages.items()
        if t["bytes_sent"] or t["bytes_received"]
    ]
    if rows:
        display.table(
            "Remote traffic",
            ["model", "stage", "requests", "bytes sent", "bytes received", "job seconds", "retries"],
            rows,
        )


def mixed_backends(results: pd.DataFrame) -> str:
    """A sentence naming where each model's numbers were computed, when the table mixes
    backends or hosts ("" when one place computed everything)."""
    if len(where_computed(results)) < 2:
        return ""
    per_model = "; ".join(f"{m}: {' and '.join(where_computed(g))}" for m, g in results.groupby("model", sort=False))
    return f"This run mixes backends ({per_model})."


def _show_summary(
    display: Display,
    summary: pd.DataFrame,
    plan: Plan,
    results: pd.DataFrame | None = None,
    norms: pd.DataFrame | None = None,
) -> None:
    """The closing table; its caption says toys, mixed backends (``results``) and the raw
    strengths' residual-unit equivalent (``norms``) where given."""
    if summary.empty:
        return
    toys = [m.spec.name for m in plan.models if m.source.is_toy]
    caption = f"{', '.join(toys)}: random-weight toys; their numbers say nothing about Qwen3." if toys else ""
    if results is not None:
        caption = " ".join(c for c in (caption, mixed_backends(results)) if c)
    if norms is not None and plan.spec.evaluation.strength_unit == "raw":
        layers = {m.spec.label: m.sweep_layers for m in plan.models}
        line = strength_check.equivalents(norms, layers, float(summary["pos_strength"].abs().max()))
        caption = " ".join(filter(None, [caption, line]))
    rows = [
        (r.model, r.dataset, r.best_layer, r.best_layer_fraction, r.glass_delta_pos, r.glass_delta_neg, r.n_items)
        for r in summary.itertuples()
    ]
    pos = summary["pos_strength"].iloc[0]
    neg = summary["neg_strength"].iloc[0]
    display.table(
        "Best steering layer per model × dataset (Glass's delta vs. unsteered)",
        ["model", "dataset", "best layer", "depth", f"Δ at {pos:+g}", f"Δ at {neg:+g}", "items"],
        rows,
        caption,
    )
