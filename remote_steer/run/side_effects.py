"""Side effects (docs/depth.md): concept X's vector at X's best layer, applied to concept
Y's held-out items, as Glass's delta with a bootstrap interval, for every X × Y.

In a run (``[evaluation] side_effects = true``), after every concept's sweep of a model:
X's best layer is known only once X is swept, so each Y's prompt passes are kept from
its sweep (``sweep_fast.HeldPrompts``, local fast-path models, when they fit in memory)
and the matrix computes only its steered rows: (concepts − 1) per held-out item of each
concept, at the run's strongest positive strength. The diagonal is the sweep's own rows.
Where the passes were not kept (a resumed run, a remote model: NDIF keeps nothing
between requests, or too little memory), one request per Y runs its prompt pass again,
shared by every vector. One part per model × Y, stamped with where it was computed
(and its job's id), consolidated into ``results/side_effects.parquet``.

On a finished run made without the field, ``scripts/side_effects.py`` computes the same
table the second way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from remote_steer.analysis.statistics import best_layers
from remote_steer.analysis.summaries import specificity
from remote_steer.engines import memory
from remote_steer.engines.extraction import SteeringVectors
from remote_steer.engines.sweep_fast import FastLogitDiffEngine, HeldPrompts, supports_fast_path
from remote_steer.engines.sweep_plain import SteerConfig
from remote_steer.models.loading import load_model
from remote_steer.remote.backend import Backend
from remote_steer.run import methods_stage
from remote_steer.run.context import RunContext
from remote_steer.run.methods_stage import glass_rows
from remote_steer.run.sweep_stage import LOGIT_TABLE
from remote_steer.rundir import RunDir
from remote_steer.rundir.files import read_parquet

SIDE_EFFECTS_TABLE = "side_effects"
__all__ = ["SIDE_EFFECTS_TABLE", "side_effects", "specificity", "stage"]
HELD_FRACTION = 0.25  # of the memory available when the sweep starts: the most the kept passes may take


def extra_rows(n_concepts: int, test_items: int) -> int:
    """Steered rows the matrix adds for one concept's held-out items (the diagonal is the sweep's)."""
    return (n_concepts - 1) * test_items


def wanted(ctx: RunContext) -> bool:
    """The run computes the matrix for this model."""
    spec = ctx.spec
    return spec.evaluation.side_effects and "logit" in spec.evaluation.modes and len(ctx.plan.splits) > 1


def hold_for(ctx: RunContext, concept: str) -> HeldPrompts | None:
    """Where concept's sweep keeps its prompt passes for the matrix (and for the methods,
    ``run/methods_stage.py``): local fast-path models whose passes over every concept fit in
    ``HELD_FRACTION`` of the memory available."""
    if not (wanted(ctx) or methods_stage.wanted(ctx)):
        return None
    if ctx.backend.kind != "local" or ctx.prepared.spec.engine != "fast":
        return None
    if ctx.holding is None:  # checked once per model
        ctx.holding = _fits(ctx)
    if not ctx.holding:
        return None
    return ctx.held.setdefault(concept, HeldPrompts(frozenset(ctx.prepared.sweep_layers)))


def _fits(ctx: RunContext) -> bool:
    model = ctx.model()
    if not supports_fast_path(model):
        return False
    tests = [test for _, test in ctx.prepared.encoded.values()]
    positions = ctx.spec.evaluation.positions
    prefix = max(it.steer_start(positions) for test in tests for it in test)
    window = max(len(it.prompt_ids) - it.steer_start(positions) for test in tests for it in test)
    need = memory.held_bytes(
        memory.model_shape(model), sum(len(t) for t in tests), prefix, window, ctx.prepared.sweep_layers
    )
    budget = HELD_FRACTION * memory.available_bytes("cpu")
    if need > budget:
        ctx.display.note(
            f"{ctx.name}: keeping the sweep's prompt passes would take {need / 2**30:.1f} GiB "
            f"(more than {HELD_FRACTION:.0%} of the {budget / HELD_FRACTION / 2**30:.1f} GiB available); "
            "the side-effects matrix and the methods run each concept's prompt pass again"
        )
        return False
    return True


def stage(ctx: RunContext) -> None:
    """The model's matrix, one part per target concept not yet written with these cells."""
    if not wanted(ctx):
        return
    spec, prepared, store, name = ctx.spec, ctx.prepared, ctx.store, ctx.name
    logit = store.read_parts(LOGIT_TABLE)
    logit = logit[logit["model"] == name] if len(logit) else logit
    concepts = [c for c in ctx.plan.splits if len(logit) and c in set(logit["dataset"])]
    if len(concepts) < 2:
        return
    configs = cells_of(logit, concepts, max(spec.strengths_for(prepared.spec)))
    strength = configs[0].strength
    todo = [t for t in concepts if not _up_to_date(store, name, t, concepts, configs)]
    if not todo:
        return
    model = ctx.model()
    if not supports_fast_path(model):
        ctx.display.note(f"{name}: side effects need the fast engine's path; not computed")
        return
    unit = spec.evaluation.strength_unit
    vectors = vectors_of(store, name, concepts, unit)
    again = []
    total = sum(len(prepared.encoded[t][1]) * (len(concepts) - 1) for t in todo)
    cells = "-".join(str(c.layer) for c in configs) + f"@{strength:g}"  # a changed cell is a new request
    with ctx.display.progress(f"{name} · side effects", total, "rows", pace=f"{name} · steered rows") as task:
        ctx.backend.on_status = lambda _stage, state: task.state(state)
        for target in todo:
            hold = ctx.held.get(target)
            _, test = prepared.encoded[target]
            held = hold is not None and hold.holds(test)
            engine = FastLogitDiffEngine(
                model, ctx.backend, spec.evaluation.batch_size, spec.evaluation.positions, hold=hold if held else None
            )
            key = f"side_effects/{name}/{target}/{cells}"
            rows = target_rows(
                engine, test, vectors, configs, concepts, target, logit, seed=spec.seed, held=held, request_key=key
            )
            frame = pd.DataFrame(rows).assign(model=name, strength_unit=unit, training=prepared.training)
            store.write_part(SIDE_EFFECTS_TABLE, name, target, 0, frame, job_key=key)
            task.advance(len(test) * (len(concepts) - 1))
            again += [] if held else [target]
    for target in concepts:  # the matrix is written: the kept passes are not needed any more
        ctx.held.pop(target, None)
    if again:
        ctx.display.note(
            f"{name}: side effects ran the prompt pass again for {len(again)} of {len(todo)} concepts "
            "(their sweep's passes were not kept in this process)"
        )


def cells_of(logit: pd.DataFrame, concepts: list[str], strength: float) -> list[SteerConfig]:
    """Each concept's vector at its best layer (one model's sweep rows) and ``strength``."""
    best = best_layers(logit).set_index("dataset")
    return [SteerConfig(int(best.loc[c, "best_layer"]), strength) for c in concepts]


def vectors_of(store: RunDir, name: str, concepts: list[str], unit: str) -> torch.Tensor:
    """[concepts, layers, hidden]: the run's CAA vectors of one model, in ``unit``."""
    return torch.stack([SteeringVectors.load(store.vector_path(name, c)).scaled(unit) for c in concepts])


def target_rows(  # noqa: PLR0913 - keyword options, one call site each (the stage, the script)
    engine: FastLogitDiffEngine,
    test: list,
    vectors: torch.Tensor,
    configs: list[SteerConfig],
    concepts: list[str],
    target: str,
    logit: pd.DataFrame,
    *,
    seed: int,
    held: bool,
    request_key: str | None = None,
) -> list[dict[str, Any]]:
    """Every vector on ``target``'s held-out items: the others computed (from the kept
    prompt passes when ``held``), its own taken from the sweep's rows."""
    own = concepts.index(target)
    only = [[v == c and v != own for c in range(len(concepts))] for v in range(len(concepts))]
    if held:
        _, steered = engine.run_held(test, vectors, configs, only)
    else:
        _, steered = engine.run_vectors(test, vectors, configs, only=only, request_key=request_key)
    picked = np.stack([steered[:, v, v] for v in range(len(concepts))], axis=1)  # [items, vector concept]
    sweep = _sweep_rows(logit, target, configs[own], [it.item_id for it in test])
    picked[:, own] = sweep["logit_diff"].to_numpy()
    stats = glass_rows(sweep["baseline_logit_diff"].to_numpy(), picked, seed=seed)
    return [
        {
            "vector": source,
            "dataset": target,
            "layer": configs[v].layer,
            "strength": configs[v].strength,
            "glass_delta": stats[v, 0],
            "ci_low": stats[v, 1],
            "ci_high": stats[v, 2],
            "n_items": len(test),
            "prompt_pass": "kept from the sweep" if held else "run again",
        }
        for v, source in enumerate(concepts)
    ]


def _sweep_rows(logit: pd.DataFrame, concept: str, config: SteerConfig, item_ids: list[str]) -> pd.DataFrame:
    """The sweep's rows of ``concept`` at one configuration, in ``item_ids``' order."""
    cell = logit[(logit["dataset"] == concept) & (logit["layer"] == config.layer)]
    cell = cell[np.isclose(cell["strength"], config.strength)]
    cell = cell[~cell["item_id"].duplicated(keep="last")].set_index("item_id")
    return cell.loc[item_ids, ["logit_diff", "baseline_logit_diff"]]


def _up_to_date(store: RunDir, name: str, target: str, concepts: list[str], configs: list[SteerConfig]) -> bool:
    """The saved part holds exactly these vectors at these layers and strength."""
    path = store.part_path(SIDE_EFFECTS_TABLE, name, target, 0)
    try:
        saved = read_parquet(path) if path.is_file() else None
    except Exception:  # noqa: BLE001 - a damaged part is computed again
        return False
    if saved is None or len(saved) != len(concepts):
        return False
    want = {(c, cfg.layer, cfg.strength) for c, cfg in zip(concepts, configs, strict=True)}
    have = {(r.vector, int(r.layer), float(r.strength)) for r in saved.itertuples()}
    return want == have


def side_effects(plan, run_dir: Path) -> pd.DataFrame:
    """The matrix of a finished run, for every local fast-path model of its prepared plan
    (each concept's prompt pass runs again: ``scripts/side_effects.py``)."""
    store = RunDir(run_dir)
    logit = store.table(LOGIT_TABLE)
    rows = []
    for prepared in plan.models:
        if prepared.spec.backend != "local" or prepared.spec.engine != "fast" or logit is None:
            continue
        name, concepts = prepared.spec.label, list(plan.splits)
        mine = logit[logit["model"] == name]
        configs = cells_of(mine, concepts, max(plan.spec.strengths_for(prepared.spec)))
        unit = plan.spec.evaluation.strength_unit
        vectors = vectors_of(store, name, concepts, unit)
        model = load_model(prepared.source, dtype=prepared.spec.dtype, device=prepared.spec.device)
        engine = FastLogitDiffEngine(model, Backend(), plan.spec.evaluation.batch_size, plan.spec.evaluation.positions)
        for target in concepts:
            _, test = prepared.encoded[target]
            found = target_rows(engine, test, vectors, configs, concepts, target, mine, seed=plan.spec.seed, held=False)
            rows += [dict(r, model=name, strength_unit=unit, training=prepared.training) for r in found]
    frame = pd.DataFrame(rows)
    store.write_local_results(SIDE_EFFECTS_TABLE, frame)
    return frame
