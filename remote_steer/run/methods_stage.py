"""Extraction methods compared (docs/depth.md): each method's vectors steered on the same
held-out items, in residual units, at every sweep layer; Glass's delta at each method's
own best layer with a bootstrap interval.

Per model × concept: one extraction pass with the readout (``extract_caa_fast_readout``)
gives the four methods' directions (``analysis.directions``), saved beside the run's
vectors as ``<concept>.<method>.safetensors`` (``remote-steer export`` reads them like
any vector file); one sweep request (``FastLogitDiffEngine.run_vectors``) steers all four
on the test items. Writes ``results/methods.parquet``. Local models on the fast path only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from remote_steer.analysis.directions import METHODS, directions, scaled
from remote_steer.engines.extraction import SteeringVectors
from remote_steer.engines.sweep_fast import FastLogitDiffEngine, extract_caa_fast_readout
from remote_steer.engines.sweep_plain import SteerConfig
from remote_steer.models.loading import load_model
from remote_steer.models.registry import layer_depth
from remote_steer.remote.backend import Backend
from remote_steer.rundir import RunDir

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


def _cell(prepared, concept, model, store, strengths, seed) -> pd.DataFrame:
    train, test = prepared.encoded[concept]
    name = prepared.spec.label
    vectors, _, readout = extract_caa_fast_readout(
        model, train, concept=concept, batch_size=16, backend=Backend(), basis=torch.empty(0)
    )
    assert readout is not None and vectors.residual_norms is not None
    found = directions(readout.positive, readout.negative)
    sets = torch.stack([scaled(found[m], vectors.residual_norms) for m in METHODS])
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
    engine = FastLogitDiffEngine(model, Backend(), 128)
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


def at_best(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model × dataset × method: the layer where the strongest positive strength moves
    the logit diff most, and Glass's delta there with its interval."""
    top = frame[frame["strength"] == frame["strength"].max()]
    index = top.groupby(["model", "dataset", "method"])["glass_delta"].idxmax().dropna()
    return top.loc[index].reset_index(drop=True)
