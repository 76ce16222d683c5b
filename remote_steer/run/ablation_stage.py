"""Directional ablation on a finished run (docs/depth.md): each concept's CAA direction
(at its best layer) projected out at every layer and position, on its held-out items,
against the unablated baseline and a seeded random direction; ``engines/ablation.py``.
Writes ``results/ablation.parquet``: one row per model × concept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from remote_steer.engines.ablation import ablated_logit_diffs
from remote_steer.engines.controls import rng_for
from remote_steer.engines.extraction import SteeringVectors
from remote_steer.models.loading import load_model
from remote_steer.remote.backend import Backend
from remote_steer.rundir import RunDir

ABLATION_TABLE = "ablation"


def _interval(values: np.ndarray, seed: int, n_boot: int = 1000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def ablation(plan, run_dir: Path) -> pd.DataFrame:
    """Every local model × concept of a prepared plan with a finished sweep."""
    store = RunDir(run_dir)
    summary = store.summary()
    rows = []
    for prepared in plan.models:
        if prepared.spec.backend != "local":
            continue
        name = prepared.spec.label
        model = load_model(prepared.source, dtype=prepared.spec.dtype, device=prepared.spec.device)
        for concept in plan.splits:
            _, test = prepared.encoded[concept]
            best = summary[(summary["model"] == name) & (summary["dataset"] == concept)]
            layer = int(best["best_layer"].iloc[0])
            direction = SteeringVectors.load(store.vector_path(name, concept)).vectors[layer]
            generator = rng_for(plan.spec.seed, name, concept, "ablation")
            random = torch.as_tensor(generator.standard_normal(direction.shape[0]), dtype=direction.dtype)
            diffs = ablated_logit_diffs(model, test, torch.stack([direction, random]), batch_size=16, backend=Backend())
            change, control = diffs[:, 1] - diffs[:, 0], diffs[:, 2] - diffs[:, 0]
            rows.append(
                {
                    "model": name,
                    "dataset": concept,
                    "direction_layer": layer,
                    "baseline_mean": float(diffs[:, 0].mean()),
                    "ablated_mean": float(diffs[:, 1].mean()),
                    "random_ablated_mean": float(diffs[:, 2].mean()),
                    "change": float(change.mean()),
                    "change_ci": _interval(change, plan.spec.seed),
                    "random_change": float(control.mean()),
                    "random_change_ci": _interval(control, plan.spec.seed + 1),
                    "n_items": len(test),
                    "training": prepared.training,
                }
            )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        for column in ("change_ci", "random_change_ci"):
            frame[[f"{column}_low", f"{column}_high"]] = pd.DataFrame(frame.pop(column).tolist(), index=frame.index)
    store.write_local_results(ABLATION_TABLE, frame)
    return frame
