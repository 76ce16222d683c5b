"""The ``remote-steer`` command line. Thin: it parses options and wires the stages."""

from __future__ import annotations

import functools
import os
import shutil
import sys
from pathlib import Path

import typer
import typer.core

# The command's own display draws every progress bar: none from the libraries below
# (huggingface_hub downloads, transformers' loading; tqdm reads TQDM_DISABLE when it is
# first imported, which is after this). A user's own setting wins.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from remote_steer.errors import RemoteSteerError


def _metavar(param) -> str:
    """``<list[float]>`` → ``FLOAT``, ``<int range>`` → ``INT``, ``<str>`` → ``TEXT``."""
    import re

    try:
        shown = str(param.display_type(None) or "")
    except Exception:  # a type typer cannot describe without a context: a neutral name
        return "VALUE"
    inner = re.sub(r"^<|>$", "", shown)
    inner = re.sub(r"^list\[(.*)\]$", r"\1", inner).replace(" range", "")
    return {"str": "TEXT", "": "VALUE"}.get(inner, inner).upper()


def _no_type(ctx) -> None:
    """Rich help's type column, left empty: the metavar already says what to give."""
    return None


class PlainHelpCommand(typer.core.TyperCommand):
    """``--help`` in plain click style: ``SPEC``, not typer's ``{spec}`` and ``spec <path>``;
    ``--strength FLOAT``, not ``<list[float]>``; a repeatable option says "repeat"."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, typer.core.TyperArgument):
                name = (param.metavar or param.name or "").upper()
                usage = name if param.required else f"[{name}]"
                dots = "..." if param.nargs != 1 else ""
                param.metavar = name + dots
                param._usage_display_name = functools.partial(str, usage + dots)  # type: ignore[method-assign]
                param.display_type_rich = _no_type  # type: ignore[method-assign]
            elif isinstance(param, typer.core.TyperOption) and not (param.is_flag or param.count):
                if param.metavar is None:
                    param.metavar = _metavar(param)
                if getattr(param, "multiple", False) and "repeat" not in (param.help or "").lower():
                    param.help = f"{param.help or ''} Repeat for several.".strip()


app = typer.Typer(
    help="Contrastive Activation Addition steering sweeps on open models, locally or on NDIF.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _fail(error: Exception) -> None:
    """One line on stderr, exit 2. A stray ``OSError`` (a read-only or full disk) says
    its path and reason rather than a traceback."""
    if isinstance(error, OSError) and not isinstance(error, RemoteSteerError):
        from remote_steer.errors import filesystem_error

        if error.filename is not None:
            error = filesystem_error(error, "write")
        else:
            error = RemoteSteerError(f"{type(error).__name__}: {error}")
    typer.echo(f"error: {' '.join(str(error).split())}", err=True)
    raise typer.Exit(code=2)


@app.command(cls=PlainHelpCommand, short_help="Extract vectors and sweep layers × strengths for a spec.")
def run(
    spec: Path = typer.Argument(..., help="Experiment spec (TOML), e.g. experiments/quickstart.toml."),
    name: str | None = typer.Option(None, "--name", help="Run name (directory under the spec's output_dir)."),
    output_dir: Path | None = typer.Option(None, "--output-dir", help="Override the spec's output_dir."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete an existing run directory of this name first."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or tables."),
    backend: str | None = typer.Option(
        None, "--backend", help='Run every model on this backend: "local", "remote" (NDIF) or "simulated-remote".'
    ),
    host: str | None = typer.Option(None, "--host", help="Remote server URL (default: spec, then $NDIF_HOST)."),
    modes: str | None = typer.Option(
        None, "--modes", help='Evaluation modes, comma-separated: "logit", "generation" (default: the spec\'s).'
    ),
    engine: str | None = typer.Option(
        None,
        "--engine",
        help='Engine for every model: "fast" (default) or "plain" (for a host that refuses registered code).',
    ),
) -> None:
    """Extract CAA vectors and run the layer × strength logit-diff sweep of SPEC
    (and, with the generation mode, the steered model's free answers).

    Results land in OUTPUT_DIR/NAME. Rerunning an interrupted run resumes it and
    recomputes nothing that finished.
    """
    import shlex

    if not quiet:  # the libraries below take seconds to import: say something first
        typer.echo(f"remote-steer: preparing {spec} …", err=True)
    from remote_steer.display import NullDisplay, RichDisplay
    from remote_steer.run.runner import run_experiment
    from remote_steer.run.spec import apply_overrides, load_spec

    try:
        experiment = apply_overrides(
            load_spec(spec),
            name=name,
            output_dir=str(output_dir) if output_dir else None,
            modes=modes,
            backend=backend,
            host=host,
            engine=engine,
        )
        display = NullDisplay() if quiet else RichDisplay()
        outcome = run_experiment(experiment, display=display, fresh=fresh)
    except (RemoteSteerError, OSError) as error:
        _fail(error)
        return
    except KeyboardInterrupt:
        command = resume_command(spec, name, output_dir, backend, host, modes, engine)
        hint = " (without --fresh, which would delete them)" if fresh else ""
        typer.echo(f"interrupted: finished chunks are saved; resume with{hint}:\n  {command}", err=True)
        raise typer.Exit(code=130) from None
    typer.echo(
        f"done in {outcome.seconds:.1f}s: {outcome.computed_parts} chunks computed, "
        f"{outcome.skipped_parts} already done → {outcome.run_dir}"
    )
    if not quiet:
        typer.echo(f"next: remote-steer report {shlex.quote(str(outcome.run_dir))}")


def resume_command(spec, name, output_dir, backend, host, modes, engine=None) -> str:
    """The command that resumes an interrupted run: the same options, never --fresh
    (which would delete the chunks already saved)."""
    import shlex

    parts = ["remote-steer", "run", str(spec)]
    for flag, value in (
        ("--name", name),
        ("--output-dir", output_dir),
        ("--backend", backend),
        ("--host", host),
        ("--modes", modes),
        ("--engine", engine),
    ):
        if value:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _plan_generation(spec_obj, size) -> None:
    """The generation part of ``plan`` (issue 12): its own table, upper bounds."""
    from remote_steer.display import RichDisplay
    from remote_steer.run.plan_generation import plan_generation

    plans = plan_generation(spec_obj)
    if not plans:
        return

    def count(n: int | None) -> str:
        if n is None:
            return "?"
        return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e4 else str(n)

    rows = [
        (
            p.model,
            p.concepts,
            count(p.configs),
            count(p.rows),
            count(p.tokens),
            count(p.passes),
            count(p.requests),
            size(p.bytes_sent),
            size(p.bytes_received),
        )
        for p in plans
    ]
    gen = spec_obj.generation
    RichDisplay().table(
        "Generation cost (upper bounds)",
        ["model", "concepts", "configs", "rows", "tokens", "passes", "requests", "sent", "received"],
        rows,
        f"every row counted at max_new_tokens = {gen.max_new_tokens}; rows = test items × (configs + baseline); "
        "rows that end their turn or decide their answer stop sooner",
    )


def _plan_controls(spec_obj, plans) -> None:
    """What the [controls] cost, and what they can show (issue 18)."""
    from remote_steer.analysis.controls import floor_sentence

    controls = spec_obj.controls
    if not controls.any or "logit" not in spec_obj.evaluation.modes:
        return
    from remote_steer.display import RichDisplay

    display = RichDisplay()
    kinds = ", ".join(f"{n} {k}" for k, n in vars(controls).items() if n)
    for p in plans:
        if not p.sweep_rows or p.control_rows is None:
            continue
        display.note(
            f"Controls ({p.model}): {kinds} vectors at every configuration add {p.control_rows:,} steered rows "
            f"to the sweep's {p.sweep_rows:,} ({p.control_rows / p.sweep_rows:.1f}× its rows)."
        )
    if controls.random + controls.shuffled:
        display.note(floor_sentence(controls.random + controls.shuffled))


def _plan_depth(spec_obj, plans, size) -> None:
    """What decodability by depth brings back (docs/depth.md), and at the 32B shape."""
    from remote_steer.analysis.decodability import REMOTE_DIMS, readout_bytes
    from remote_steer.display import RichDisplay

    display = RichDisplay()
    concepts = max(1, len(spec_obj.data.concepts))
    for p in plans:
        if p.depth_dims is None or p.depth_bytes is None:
            continue
        where = "comes back" if p.backend == "remote" else "stays local"
        display.note(
            f"Decodability ({p.model}): {p.depth_dims} readout dims per layer, {size(p.depth_bytes / concepts)} "
            f"per concept ({where}); no extra forward pass."
        )
        if p.side_effect_rows and p.sweep_rows:
            display.note(
                f"Side effects ({p.model}, scripts/side_effects.py): {p.side_effect_rows:,} steered rows beyond "
                f"the sweep's {p.sweep_rows:,} ({p.side_effect_rows / p.sweep_rows:.2f}× its rows)."
            )
    per_item = readout_bytes(1, 64, REMOTE_DIMS)
    display.note(
        f"Decodability on NDIF at the 32B shape (64 layers × 5,120; {REMOTE_DIMS} random dims): "
        f"{size(per_item)} per training item, {size(150 * per_item)} per concept of 150 training items."
    )


@app.command(cls=PlainHelpCommand, short_help="Show what a spec will cost, per model; offline-safe.")
def plan(
    spec: Path = typer.Argument(..., help="Experiment spec (TOML), e.g. experiments/qwen3_family.toml."),
    check_hosts: bool = typer.Option(
        False, "--check-hosts", help="Ask each remote host (its open /status) whether it serves the model."
    ),
) -> None:
    """Print, per model, what SPEC will cost: backend, engine, host, requests, forward
    passes and estimated bytes each way. Makes no network call unless --check-hosts."""
    from remote_steer.display import RichDisplay
    from remote_steer.run.plan import plan_experiment
    from remote_steer.run.spec import load_spec

    try:
        plans, estimated = plan_experiment(load_spec(spec), check_hosts=check_hosts)
    except (RemoteSteerError, OSError) as error:
        _fail(error)
        return

    def size(n: float | None) -> str:
        if n is None:
            return "?"
        for unit in ("B", "KB", "MB", "GB"):
            if n < 1000:
                return f"{n:.0f} {unit}"
            n /= 1000
        return f"{n:.1f} TB"

    rows = [
        (
            p.model,
            p.training,
            p.backend,
            p.engine,
            p.host,
            p.hosted,
            p.layers or "?",
            p.sweep_layers or "?",
            p.items,
            p.requests if p.requests is not None else "?",
            p.forward_passes if p.forward_passes is not None else "?",
            size(p.bytes_sent),
            size(p.bytes_received),
        )
        for p in plans
    ]
    caption = f"items: train+test over {len(load_spec(spec).data.concepts)} concepts"
    if estimated:
        caption += "; data not readable here, counts estimated from max_items"
    RichDisplay().table(
        f"Plan for {spec}",
        [
            "model",
            "training",
            "backend",
            "engine",
            "host",
            "hosted",
            "layers",
            "sweep",
            "items",
            "requests",
            "forward passes",
            "sent ≈",
            "received ≈",
        ],
        rows,
        caption,
    )
    _plan_controls(load_spec(spec), plans)
    _plan_depth(load_spec(spec), plans, size)
    from remote_steer.run.memory_plan import memory_rows  # peak memory per model and device

    def gb(v: float | None) -> str:
        return "?" if v is None else f"{v:.2f}"

    memory = [
        (
            m["model"],
            m["device"],
            m["dtype"],
            gb(m["weights_gb"]),
            gb(m["group_gb"]),
            gb(m["block_gb"]),
            gb(m["total_gb"]),
            gb(m["free_gb"]),
            m["fits"],
        )
        for m in memory_rows(load_spec(spec))
    ]
    RichDisplay().table(
        "Peak memory (fast engine, ~160-token prompts)",
        ["model", "device", "dtype", "weights", "group", "block", "peak", "free", "fits"],
        memory,
        "Sizes in GB. group: prompt K/V cache + window residuals; block: one staircase block's transient "
        "(per-row prefix K/V copies, attention, MLP); free: on the device now ('?' without it); "
        "'smaller blocks': the engine shrinks them to fit",
    )

    _plan_generation(load_spec(spec), size)


@app.command(
    "check-remote", cls=PlainHelpCommand, short_help="Try a remote host: reachable, hosted, key, one tiny trace."
)
def check_remote(
    host: str | None = typer.Option(
        None, "--host", help="Server URL (default: $NDIF_HOST, then nnsight's configured host)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Model to try (default: the first registry model the host serves)."
    ),
    engine: str = typer.Option("fast", "--engine", help='"fast" or "plain": the engine the tiny trace uses.'),
) -> None:
    """First contact with a remote host, before a long run: is it reachable, does it
    host the model, which nnsight and python it runs, does it take the API key, and one
    tiny trace (one item, baseline and one steered configuration) with its round-trip
    time and bytes. Each failure is one line saying what to do; exit code 2."""
    from remote_steer.remote.check import check_remote as run_checks

    if engine not in ("fast", "plain"):
        _fail(RemoteSteerError(f'--engine {engine!r}: expected "fast" or "plain"'))
    failed = False
    try:
        for step in run_checks(host, model, engine):
            typer.echo(f"{'ok  ' if step.ok else 'FAIL'} {step.name}: {step.detail}")
            failed = failed or not step.ok
    except (RemoteSteerError, OSError) as error:
        _fail(error)
    if failed:
        raise typer.Exit(code=2)


@app.command(cls=PlainHelpCommand, short_help="List the study's models and the random-weight toys.")
def models() -> None:
    """List the registry's models grouped by family and base model: the Qwen3 study, the
    Qwen2.5-32B matched pair, the embedded real model and the random-weight toys."""
    from remote_steer.display import RichDisplay
    from remote_steer.models.registry import base_model, grouped_cards

    rows = [
        (
            c.family,
            base_model(c),
            c.name,
            "embedded (random-weight toy)" if c.toy else (f"embedded ({c.hub_id} GGUF)" if c.embedded else c.hub_id),
            c.n_layers,
            c.hidden_size,
            f"{c.n_heads}/{c.n_kv_heads}",
            f"{c.params_total_b:g}B" if not c.toy else f"{c.params_total_b * 1000:.0f}M",
            f"{c.params_active_b:g}B" if not c.toy else f"{c.params_active_b * 1000:.0f}M",
            c.kind,
            c.training,
            "yes" if c.tied_embeddings else "no",
            c.default_backend,
        )
        for c in grouped_cards()
    ]
    RichDisplay().table(
        "Models",
        [
            "family",
            "base",
            "model",
            "weights",
            "layers",
            "hidden",
            "heads q/kv",
            "params",
            "active",
            "type",
            "training",
            "tied emb.",
            "backend",
        ],
        rows,
        "Grouped by family, then by the base model each was post-trained from: models on one base "
        "(the Qwen2.5-32B matched pair) differ only in post-training. "
        "toy/* models have random weights from a fixed seed: for tests and the quickstart only. "
        "small/* are real trained models built offline from GGUF packages (SmolLM2-135M-Instruct, Llama "
        "architecture; Gemma 3 270M, pre-trained): not Qwen3, "
        "not a study model.",
    )


@app.command(cls=PlainHelpCommand, short_help="List the concepts and whether a source has them.")
def datasets(
    source: str = typer.Option("fixtures", "--source", help='"fixtures", "hub", or a local model-written-evals root.'),
) -> None:
    """List the study's concepts, the files behind them and whether SOURCE has them."""
    from remote_steer.data.concepts import POLARITY
    from remote_steer.data.loading import list_concepts
    from remote_steer.display import RichDisplay

    try:
        entries = list_concepts(source)
    except (RemoteSteerError, OSError) as error:
        _fail(error)
        return
    hub = source == "hub"
    missing = "no (not cached)" if hub else "no (missing)"
    rows = [
        (
            e["concept"],
            "yes" if e["available"] else missing,
            e["n_lines"] if e.get("n_lines") is not None else "—",
            "\n".join(str(f) for f in e["files"]),
        )
        for e in entries
    ]
    caption = ""
    if hub and not all(e["available"] for e in entries):
        caption = (
            "not cached: this command never goes online; `remote-steer run` downloads a hub file "
            "on first use when huggingface.co is reachable (offline it stops with the file's name)"
        )
    elif not all(e["available"] for e in entries):
        caption = f"missing: the file is not under {source} (or is a Git LFS pointer, not data)"
    display = RichDisplay()
    display.table(f"Concepts in {source}", ["concept", "available", "lines", "files"], rows, caption)
    display.table(
        "Polarity: what the matching answer (positive strength) means",
        ["concept", "matching answer"],
        [(e["concept"], POLARITY.get(e["concept"], "as its files' answer_matching_behavior")) for e in entries],
        'Reverse a concept in the spec with data.flip = ["concept"].',
    )


@app.command(cls=PlainHelpCommand, short_help="Build tables and figures from saved runs.")
def report(
    run_dirs: list[Path] = typer.Argument(
        ..., help="One or more run directories (each with results/logit_diff.parquet)."
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Where report.md, figures/ and tables/ go. Default: RUN_DIR/report for one run; "
        "outputs/report-<UTC timestamp> for several.",
    ),
    n_boot: int = typer.Option(1000, "--n-boot", min=1, help="Bootstrap resamples per model × dataset."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    no_figures: bool = typer.Option(False, "--no-figures", help="Write the tables only (faster)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Write the report without printing tables."),
) -> None:
    """Rebuild the study's tables and figures from saved results; loads no model.

    Several run directories (say one local, one remote) merge into one report: rows
    are concatenated, and a (model, dataset, item, layer, strength) that two runs
    both hold is taken from the first run listed (report.md notes it).
    """
    from remote_steer.analysis.report import build_report
    from remote_steer.display import RichDisplay

    try:
        written = build_report(run_dirs, output, n_boot=n_boot, seed=seed, figures=not no_figures)
    except (RemoteSteerError, OSError) as error:
        _fail(error)
        return
    if not quiet:
        display = RichDisplay()
        for table in (t for t in written.tables if t.main):
            # an interval on its own line keeps the columns narrow enough for an 80-column terminal
            frame = table.terminal if table.terminal is not None else table.frame
            rows = [[str(v).replace(" [", "\n[") for v in row] for row in frame.to_numpy().tolist()]
            display.table(table.title, list(frame.columns), rows, table.caption)
        if "permutation" in written.texts:
            display.note(written.texts["permutation"])
        for note in written.notes:
            display.note(f"note: {note}")
        for figure in written.figures:
            if figure.skipped:
                display.note(f"figure left out: {figure.title} ({figure.skipped})")
    drawn = sum(1 for f in written.figures if not f.skipped)
    typer.echo(
        f"report: {written.path}\n  ({len(written.tables)} tables, {drawn} figures in {written.out_dir / 'figures'})"
    )


@app.command(cls=PlainHelpCommand, short_help="Time the sweep against steering-vectors and the floor.")
def bench(
    items: int = typer.Option(64, "--items", help="Held-out items swept (as many training items train the vector)."),
    layers: int = typer.Option(24, "--layers", help="Decoder layers of the benchmark toy."),
    hidden: int | None = typer.Option(
        None, "--hidden", help="Hidden size of the benchmark toy (default 256), or of the --shape (default: its own)."
    ),
    shape: str | None = typer.Option(
        None, "--shape", help='A registry model, e.g. "Qwen3-4B": random weights with its depth, heads and vocabulary.'
    ),
    width_scale: float | None = typer.Option(
        None, "--width-scale", help="Scale the --shape's width (hidden size, MLP) by this factor; depth is kept."
    ),
    model: str = typer.Option(
        "toy/qwen3", "--model", help='Without --shape: "toy/qwen3" or "small/smollm2-135m-instruct".'
    ),
    only: str = typer.Option("abcd", "--only", help='Implementations to run, e.g. "ad" (default all: "abcd").'),
    quick: bool = typer.Option(
        False,
        "--quick",
        help="Reduced mode (8 items, one repeat, (c) on 1 item, no (b)): < 5 min; "
        "with --generation a tiny toy and few tokens.",
    ),
    device: str = typer.Option(
        "cpu", "--device", help='"cpu"; for CUDA run tests/gpu_check.py (full-size shapes in bf16).'
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Upstream model-written-evals root (default: the bundled fixtures)."
    ),
    threads: int = typer.Option(2, "--threads", help="Torch threads in every implementation."),
    batch_size: int = typer.Option(
        16, "--batch-size", help="Prompts per forward pass, the same for every batched implementation."
    ),
    repeats: int = typer.Option(3, "--repeats", help="Alternating runs of every implementation; medians are reported."),
    plain_items: int = typer.Option(
        8, "--plain-items", help="Items the plain protocol (c) sweeps, scaled to all; 0 = all."
    ),
    positions: str = typer.Option("assistant", "--positions", help='"assistant" or "all".'),
    skip_steering_vectors: bool = typer.Option(False, "--skip-steering-vectors", help="Leave out (b)."),
    sv_python: Path = typer.Option(
        Path(".bench-venv/bin/python"), "--sv-python", help="Python of the steering-vectors venv."
    ),
    output_dir: Path = typer.Option(
        Path("outputs/bench"), "--output-dir", help="Where the JSON and Markdown results go."
    ),
    generation: bool = typer.Option(
        False, "--generation", help="Benchmark steered generation instead (docs/generation.md)."
    ),
    new_tokens: int = typer.Option(64, "--new-tokens", help="--generation: tokens every row decodes (forced length)."),
    plain_configs: int = typer.Option(
        1, "--plain-configs", help="--generation: configurations (b) and (c) run, time scaled to all; 0 = all."
    ),
) -> None:
    """Time this project's sweep against steering-vectors, the plain protocol and the compute floor.

    With --generation: this project's generation engine against one nnsight generate
    per configuration, transformers generate with a hook, and the plain-PyTorch floor.

    Each implementation runs in its own process on the same prompts, alternating;
    the table shows medians, token × layer work, peak memory and the ratios. See the
    README's Benchmark section.
    """
    if generation:
        _bench_generation(items, layers, hidden or 128, threads, repeats, new_tokens, quick, output_dir, plain_configs)
        return
    from remote_steer.bench.bench import BenchOptions, run_bench, show, write_result
    from remote_steer.display import RichDisplay

    if positions not in ("assistant", "all"):
        _fail(RemoteSteerError(f'--positions {positions!r}: expected "assistant" or "all"'))
        return
    if device != "cpu":
        _fail(
            RemoteSteerError(
                f"--device {device!r}: the bench's CPU protocol runs on the CPU; on a GPU run "
                "`python tests/gpu_check.py` (Qwen3-4B and Qwen3-30B-A3B shapes at full size, bf16)"
            )
        )
        return
    shape_hidden = hidden if shape else None
    if shape and width_scale is not None:
        from remote_steer.models.registry import lookup

        card = lookup(shape)
        if card is None:
            _fail(RemoteSteerError(f"--shape {shape!r}: not a registry model (see `remote-steer models`)"))
            return
        step = 2 * card.n_heads
        shape_hidden = max(step, int(round(card.hidden_size * width_scale / step)) * step)
    options = BenchOptions(
        items=items,
        layers=layers,
        hidden=hidden or 256,
        data=str(data) if data else None,
        threads=threads,
        shape=shape,
        shape_hidden=shape_hidden,
        model=model,
        implementations=only,
        batch_size=batch_size,
        repeats=repeats,
        plain_items=plain_items,
        positions="all" if positions == "all" else "assistant",  # validated above
        skip_steering_vectors=skip_steering_vectors,
        sv_python=str(sv_python),
        output_dir=str(output_dir),
    )
    if quick:
        from remote_steer.bench.bench import apply_quick

        options = apply_quick(options)
    display = RichDisplay()
    try:
        result = run_bench(options, display)
    except (RemoteSteerError, OSError) as error:
        _fail(error)
        return
    json_path, md_path = write_result(result, output_dir)
    show(result, display)
    typer.echo(f"bench: {json_path} and {md_path}")


@app.command(cls=PlainHelpCommand, short_help="Ask a question; see baseline and steered answers.")
def generate(
    run_dir: Path = typer.Argument(..., help="A run directory (holds vectors/)."),
    question: str | None = typer.Argument(None, help="The question to ask (omit with --chat)."),
    model: str = typer.Option(..., "--model", "-m", help="Model of the run, e.g. toy/qwen3."),
    concept: str = typer.Option(..., "--concept", "-c", help="Concept whose vector steers, e.g. corrigibility."),
    layer: int = typer.Option(..., "--layer", "-l", help="Decoder layer to steer (0-based)."),
    strength: list[float] = typer.Option(
        ..., "--strength", "-s", help="Strength in raw units (as in the sweep); repeat for several."
    ),
    chat: bool = typer.Option(False, "--chat", help="Ask questions in a loop (empty line or Ctrl-D ends)."),
    backend: str | None = typer.Option(
        None, "--backend", help='"local", "remote" or "simulated-remote" (default: the run\'s).'
    ),
    host: str | None = typer.Option(None, "--host", help="Remote server URL (default: the run's, then $NDIF_HOST)."),
    max_new_tokens: int = typer.Option(40, "--max-new-tokens", help="Tokens generated per answer."),
    positions: str = typer.Option("assistant", "--positions", help='Prompt positions steered: "assistant" or "all".'),
) -> None:
    """Answer QUESTION unsteered and steered, side by side, one row per strength.

    Uses the vector the run extracted for MODEL × CONCEPT at LAYER, greedy
    decoding and the model's chat template; all strengths go in one request.
    """
    from remote_steer.chat import ChatSession, show_answers
    from remote_steer.display import RichDisplay

    if question is None and not chat:
        _fail(RemoteSteerError("generate: give a QUESTION, or --chat to ask several"))
        return
    display = RichDisplay()
    try:
        session = ChatSession(
            run_dir,
            model,
            concept,
            layer,
            strength,
            backend=backend,
            host=host,
            max_new_tokens=max_new_tokens,
            positions=positions,
        )
        if question:
            show_answers(display, session.ask(question))
        while chat:
            try:
                line = input("question> ").strip()
            except EOFError:
                break
            if not line:
                break
            show_answers(display, session.ask(line))
    except (RemoteSteerError, OSError) as error:
        _fail(error)
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None


@app.command(cls=PlainHelpCommand, short_help="Write vectors as GGUF, safetensors or steering-vectors.")
def export(
    run_dir: Path = typer.Argument(..., help="A run directory (holds vectors/)."),
    fmt: str = typer.Option(..., "--format", "-f", help='"gguf" (llama.cpp), "safetensors" or "steering-vectors".'),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Directory for the files (default: RUN_DIR/export/FORMAT)."
    ),
    model: list[str] | None = typer.Option(None, "--model", "-m", help="Only this model (repeatable)."),
    concept: list[str] | None = typer.Option(None, "--concept", "-c", help="Only this concept (repeatable)."),
    layer: list[int] | None = typer.Option(
        None, "--layer", "-l", help="Only this decoder layer (repeatable; default all)."
    ),
) -> None:
    """Write the run's steering vectors for other tools, one file per model × concept.

    gguf is a llama.cpp control vector, used with llama.cpp's flags as

    \b
      llama-cli -m MODEL.gguf --control-vector-scaled FILE.gguf:S \\
        --control-vector-layer-range L L

    (strength S at layer L; --control-vector FILE.gguf is strength 1).

    steering-vectors is that library's SteeringVector as safetensors. See
    docs/reference.md, "Exporting vectors".
    """
    from remote_steer.export import export_vectors

    try:
        written = export_vectors(run_dir, fmt, output=output, models=model, concepts=concept, layers=layer)
    except (RemoteSteerError, OSError) as error:
        _fail(error)
        return
    width = shutil.get_terminal_size().columns  # COLUMNS when piped, else 80
    for item in written:
        layers = f"layers {item.layers[0]}..{item.layers[-1]}" if len(item.layers) > 1 else f"layer {item.layers[0]}"
        about = f"({item.model} · {item.concept} · {layers})"
        line = f"{item.path}  {about}"
        # a narrow terminal gets the path whole on its own line (copyable), what it holds below
        typer.echo(line if len(line) <= width else f"{item.path}\n  {about}")
    if fmt == "gguf":
        typer.echo("note: layer 0 is left out of GGUF files (llama.cpp cannot steer it)")


def _bench_generation(items, layers, hidden, threads, repeats, new_tokens, quick, output_dir, plain_configs) -> None:
    import json
    from dataclasses import asdict

    from remote_steer.bench.generation_bench import GenBenchOptions, markdown, run_generation_bench
    from remote_steer.display import RichDisplay
    from remote_steer.run.store import atomic_write

    if quick:
        options = GenBenchOptions.quick(threads=threads, output_dir=str(output_dir))
    else:
        options = GenBenchOptions(
            items=items,
            layers=layers,
            hidden=hidden,
            threads=threads,
            repeats=repeats,
            new_tokens=new_tokens,
            output_dir=str(output_dir),
            plain_configs=plain_configs,
        )
    display = RichDisplay()
    result = run_generation_bench(options, display)
    command = "remote-steer bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "remote-steer bench --generation"
    text = markdown(result, command)
    json_path, md_path = Path(output_dir) / "generation_bench.json", Path(output_dir) / "generation_bench.md"
    atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps(asdict(result), indent=2) + "\n"))
    atomic_write(md_path, lambda tmp: tmp.write_text(text))
    typer.echo(text)
    typer.echo(f"bench: {json_path} and {md_path}")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
