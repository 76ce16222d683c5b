"""Extraction methods compared (docs/depth.md): each method's vectors steered on the same
held-out items, in residual units, at every sweep layer; Glass's delta at each method's
own best layer with a bootstrap interval.

Per model × concept: the extraction pass's readout (``extract_caa_fast_readout``, the
whole residual) gives the four methods' directions (``analysis.directions``), saved beside
the run's vectors as ``<concept>.<method>.safetensors`` (``remote-steer export`` reads them
like any vector file); one sweep request (``FastLogitDiffEngine.run_vectors``) steers all
four on the test items. Local models on the fast path only (a remote readout is a random
projection, not the residual).

In a run (``[evaluation] methods = true``, ``stage``): right after each concept's sweep,
from the readout its extraction just made and the prompt passes its sweep kept
(``sweep_fast.HeldPrompts``), so neither the extraction nor the prompts run again; one
part per model × concept, consolidated into ``results/methods.parquet``. A resumed run
whose extraction was saved earlier runs the readout pass again. On a finished run made
without the field, ``compare_methods`` (``scripts/compare_methods.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from remote_steer.analysis.directions import METHODS, directions, scaled
from remote_steer.analysis.summaries import at_best
from remote_steer.engines.extraction import SteeringVectors
from remote_steer.engines.sweep_fast import (
    FastLogitDiffEngine,
    Readout,
    extract_caa_fast_readout,
    supports_fast_path,
)
from remote_steer.engines.sweep_plain import SteerConfig
from remote_steer.models.loading import load_model
from remote_steer.models.registry import layer_depth
from remote_steer.remote.backend import Backend
from remote_steer.run.context import RunContext
from remote_steer.rundir import RunDir
from remote_steer.rundir.files import read_parquet

__all__ = ["METHODS_TABLE", "STRENGTHS", "at_best", "compare_methods", "glass_rows", "stage"]

METHODS_TABLE = "methods"
STRENGTHS = (-1.0, -0.25, 0.25, 1.0)  # residual units: × the layer's mean residual norm


def method_path(store: RunDir, model: str, concept: str, method: str) -> Path:
    return store.method_vector_path(model, concept, method)


def glass_rows(baseline: np.ndarray, steered: np.ndarray, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """[configs, 3]: Glass's delta of each column of ``steered`` [items, configs] against the
    unsteered ``baseline`` [items] (SD ddof = 1), with a 95 % percentile bootstrap interval
    (items resampled, the same resample for every column)."""

    def delta(base, steer):
        sd = base.std(ddof=1)
        return (steer.mean(0) - base.mean()) / sd if sd > 0 else np.full(steer.shape[1], np.nan)

    rng = np.random.default_rng(seed)
    n = len(baseline)
    draws = np.stack([delta(baseline[pick], steered[pick]) for pick in rng.integers(0, n, (n_boot, n))])
    low, high = np.nanpercentile(draws, [2.5, 97.5], axis=0)
    return np.stack([delta(baseline, steered), low, high], axis=1)


def _readout(model, prepared, concept: str, positions) -> tuple[SteeringVectors, Readout]:
    """The extraction pass again, with the whole residual read out (a finished or resumed run)."""
    train, _ = prepared.encoded[concept]
    vectors, _, readout = extract_caa_fast_readout(
        model, train, concept=concept, batch_size=16, backend=Backend(), positions=positions, basis=torch.empty(0)
    )
    assert readout is not None
    return vectors, readout


def _cell(  # noqa: PLR0913 - one model × concept's inputs, from the stage or the script
    prepared, concept, model, store, strengths, seed, *, found=None, engine=None
) -> pd.DataFrame:
    """One model × concept: the methods' vectors saved and steered. ``found``: (vectors,
    readout) from the run's extraction; ``engine``: one holding the sweep's prompt passes."""
    train, test = prepared.encoded[concept]
    name = prepared.spec.label
    vectors, readout = found if found is not None else _readout(model, prepared, concept, "assistant")
    assert vectors.residual_norms is not None
    directions_found = directions(readout.positive, readout.negative)
    sets = torch.stack([scaled(directions_found[m], vectors.residual_norms) for m in METHODS])
    for method, unit in zip(METHODS, sets, strict=True):
        path = method_path(store, name, concept, method)
        path.parent.mkdir(parents=True, exist_ok=True)
        SteeringVectors(
            unit,
            len(train),
            model.name,
            model.revision,
            f"{concept} ({method})",
            vectors.residual_norms,
            vectors.positions,
        ).save(path)
    configs = [SteerConfig(layer, s) for layer in prepared.sweep_layers for s in strengths]
    engine = engine if engine is not None else FastLogitDiffEngine(model, Backend(), 128)
    if engine.hold is not None and engine.hold.holds(test):
        baseline, steered = engine.run_held(test, sets, configs)
    else:
        baseline, steered = engine.run_vectors(test, sets, configs)
    rows = []
    for v, method in enumerate(METHODS):
        stats = glass_rows(baseline, steered[:, v], seed=seed)
        for c, config in enumerate(configs):
            rows.append(
                {
                    "model": name,
                    "dataset": concept,
                    "method": method,
                    "layer": config.layer,
                    "layer_fraction": layer_depth(config.layer, prepared.n_layers),
                    "strength": config.strength,
                    "glass_delta": stats[c, 0],
                    "ci_low": stats[c, 1],
                    "ci_high": stats[c, 2],
                    "n_items": len(test),
                    "training": prepared.training,
                }
            )
    return pd.DataFrame(rows)


def wanted(ctx: RunContext) -> bool:
    """The run compares the methods for this model (local, fast engine, a logit sweep)."""
    spec = ctx.spec
    return (
        spec.evaluation.methods
        and "logit" in spec.evaluation.modes
        and ctx.backend.kind == "local"
        and ctx.prepared.spec.engine == "fast"
    )


def stage(ctx: RunContext, concept: str, found: tuple[SteeringVectors, Readout] | None) -> None:
    """After the concept's sweep: its methods part, unless saved with these layers."""
    if not wanted(ctx):
        return
    store, name, prepared = ctx.store, ctx.name, ctx.prepared
    configs = {(layer, s) for layer in prepared.sweep_layers for s in STRENGTHS}
    path = store.part_path(METHODS_TABLE, name, concept, 0)
    try:
        saved = read_parquet(path) if path.is_file() else None
    except Exception:  # noqa: BLE001 - a damaged part is computed again
        saved = None
    if saved is not None and {(int(r.layer), float(r.strength)) for r in saved.itertuples()} == configs:
        return
    model = ctx.model()
    if not supports_fast_path(model):
        return
    if found is None:
        ctx.display.note(f"{name} · {concept}: methods: the extraction was saved earlier; reading it out again")
        found = _readout(model, prepared, concept, ctx.spec.evaluation.positions)
    hold = ctx.held.get(concept)
    engine = FastLogitDiffEngine(
        model, ctx.backend, ctx.spec.evaluation.batch_size, ctx.spec.evaluation.positions, hold=hold
    )
    rows = len(prepared.encoded[concept][1]) * len(METHODS) * len(configs)
    with ctx.display.progress(f"{name} · {concept} · methods", rows, "rows", pace=f"{name} · steered rows") as task:
        frame = _cell(prepared, concept, model, store, STRENGTHS, ctx.spec.seed, found=found, engine=engine)
        task.advance(rows)
    store.write_part(METHODS_TABLE, name, concept, 0, frame)


def compare_methods(plan, run_dir: Path, strengths=STRENGTHS, on_cell=None) -> pd.DataFrame:
    """Every local fast-path model × concept of a prepared plan (``runner.prepare``)."""
    store = RunDir(run_dir)
    frames = []
    for prepared in plan.models:
        if prepared.spec.backend != "local":
            continue
        model = load_model(prepared.source, dtype=prepared.spec.dtype, device=prepared.spec.device)
        if model.fast_path_refusal is not None:
            continue
        for concept in plan.splits:
            frames.append(_cell(prepared, concept, model, store, strengths, plan.spec.seed))
            if on_cell is not None:
                on_cell(prepared.spec.label, concept)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    store.write_local_results(METHODS_TABLE, frame)
    return frame
