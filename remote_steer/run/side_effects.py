"""Side effects (docs/depth.md): concept X's vector at X's best layer, applied to concept
Y's held-out items, as Glass's delta with a bootstrap interval, for every X × Y.

Per model and target concept Y: one sweep request (``FastLogitDiffEngine.run_vectors``)
carries every concept's vector, each only at its own best layer and the run's strongest
positive strength (``only``), so the prompt pass of Y's items is shared by all of them:
the matrix costs (concepts − 1) extra steered rows per held-out item of each concept,
beside the sweep's layers × strengths. Reads a finished run (its vectors and summary);
writes ``results/side_effects.parquet``. Local models on the fast path only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from remote_steer.engines.extraction import SteeringVectors
from remote_steer.engines.sweep_fast import FastLogitDiffEngine
from remote_steer.engines.sweep_plain import SteerConfig
from remote_steer.models.loading import load_model
from remote_steer.remote.backend import Backend
from remote_steer.run.methods_stage import glass_rows
from remote_steer.rundir import RunDir

SIDE_EFFECTS_TABLE = "side_effects"


def extra_rows(n_concepts: int, test_items: int) -> int:
    """Steered rows the matrix adds for one concept's held-out items (the diagonal is the sweep's)."""
    return (n_concepts - 1) * test_items


def model_matrix(plan, prepared, store: RunDir, summary: pd.DataFrame, model=None) -> list[dict]:
    """One model's matrix rows (``model``: its loaded weights, else loaded here)."""
    name, concepts = prepared.spec.label, list(plan.splits)
    unit = plan.spec.evaluation.strength_unit
    strength = max(plan.spec.strengths_for(prepared.spec))
    cells = summary[summary["model"] == name].set_index("dataset")
    vectors = torch.stack([SteeringVectors.load(store.vector_path(name, c)).scaled(unit) for c in concepts])
    configs = [SteerConfig(int(cells.loc[c, "best_layer"]), strength) for c in concepts]
    only = [[v == c for c in range(len(concepts))] for v in range(len(concepts))]
    if model is None:
        model = load_model(prepared.source, dtype=prepared.spec.dtype, device=prepared.spec.device)
    engine = FastLogitDiffEngine(model, Backend(), 128, plan.spec.evaluation.positions)
    rows = []
    for target in concepts:
        _, test = prepared.encoded[target]
        baseline, steered = engine.run_vectors(test, vectors, configs, only=only)
        picked = np.stack([steered[:, v, v] for v in range(len(concepts))], axis=1)  # [items, vector concept]
        stats = glass_rows(baseline, picked, seed=plan.spec.seed)
        for v, source in enumerate(concepts):
            rows.append(
                {
                    "model": name,
                    "vector": source,
                    "dataset": target,
                    "layer": configs[v].layer,
                    "strength": strength,
                    "strength_unit": unit,
                    "glass_delta": stats[v, 0],
                    "ci_low": stats[v, 1],
                    "ci_high": stats[v, 2],
                    "n_items": len(test),
                    "training": prepared.training,
                }
            )
    return rows


def side_effects(plan, run_dir: Path) -> pd.DataFrame:
    """The matrix for every local fast-path model of a prepared plan with a finished sweep."""
    store = RunDir(run_dir)
    summary = store.summary()
    rows = []
    for prepared in plan.models:
        if prepared.spec.backend == "local" and prepared.spec.engine == "fast":
            rows += model_matrix(plan, prepared, store, summary)
    frame = pd.DataFrame(rows)
    store.write_local_results(SIDE_EFFECTS_TABLE, frame)
    return frame


def specificity(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model: mean Glass's delta on the diagonal (a vector on its own concept), mean
    |Glass's delta| off it, their ratio, and how many off-diagonal intervals exclude 0."""
    rows = []
    for model, cell in frame.groupby("model", sort=False):
        diagonal = cell[cell["vector"] == cell["dataset"]]
        off = cell[cell["vector"] != cell["dataset"]]
        on, across = float(diagonal["glass_delta"].mean()), float(off["glass_delta"].abs().mean())
        rows.append(
            {
                "model": model,
                "diagonal": on,
                "off_diagonal_abs": across,
                "ratio": on / across if across > 0 else float("nan"),
                "off_diagonal_excluding_0": int(((off["ci_low"] > 0) | (off["ci_high"] < 0)).sum()),
                "off_diagonal_cells": len(off),
            }
        )
    return pd.DataFrame(rows)
