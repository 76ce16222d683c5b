"""Directional ablation on a finished run (docs/depth.md): each concept's CAA direction
(at its best layer) projected out at every layer and position, on its held-out items,
against the unablated baseline and a seeded random direction; ``engines/ablation.py``.
Writes ``results/ablation.parquet``: one row per model × concept. On in a run with
``[evaluation] ablation = true``; on a finished run, ``scripts/ablation.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from remote_steer.display import Display, NullDisplay
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


def _concept_row(plan, prepared, model, store: RunDir, best: pd.DataFrame, concept: str) -> dict:
    """One model × concept: its direction at its best layer and a seeded random one, ablated."""
    name = prepared.spec.label
    _, test = prepared.encoded[concept]
    layer = int(best.loc[concept, "best_layer"])
    direction = SteeringVectors.load(store.vector_path(name, concept)).vectors[layer]
    generator = rng_for(plan.spec.seed, name, concept, "ablation")
    random = torch.as_tensor(generator.standard_normal(direction.shape[0]), dtype=direction.dtype)
    diffs = ablated_logit_diffs(model, test, torch.stack([direction, random]), batch_size=16, backend=Backend())
    change, control = diffs[:, 1] - diffs[:, 0], diffs[:, 2] - diffs[:, 0]
    return {
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


def write(plan, store: RunDir, display: Display | None = None) -> pd.DataFrame:
    """Every local model × concept of a prepared plan whose sweep is summarised in ``store``
    (``evaluation.ablation``: the run calls it after the summary; ``scripts/ablation.py`` on
    a finished run). Remote models are skipped with a note. Writes ``results/ablation.parquet``."""
    display = display or NullDisplay()
    summary = store.summary()
    remote = [p.spec.label for p in plan.models if p.spec.backend != "local"]
    if remote:
        display.note(f"Directional ablation runs on local models only; skipped: {', '.join(remote)}.")
    rows = []
    for prepared in plan.models:
        name = prepared.spec.label
        best = summary[summary["model"] == name].set_index("dataset") if len(summary) else summary
        concepts = [c for c in plan.splits if c in best.index]
        if prepared.spec.backend != "local" or not concepts:
            continue
        model = load_model(prepared.source, dtype=prepared.spec.dtype, device=prepared.spec.device)
        with display.progress(f"{name} · directional ablation", len(concepts), "concepts") as task:
            for concept in concepts:
                rows.append(_concept_row(plan, prepared, model, store, best, concept))
                task.advance()
    frame = pd.DataFrame(rows)
    if not frame.empty:
        for column in ("change_ci", "random_change_ci"):
            frame[[f"{column}_low", f"{column}_high"]] = pd.DataFrame(frame.pop(column).tolist(), index=frame.index)
    store.write_local_results(ABLATION_TABLE, frame)
    if rows:
        display.note(f"Directional ablation: {len(rows)} model × concept cells in results/{ABLATION_TABLE}.parquet.")
    return frame


def ablation(plan, run_dir: Path) -> pd.DataFrame:
    """Every local model × concept of a prepared plan with a finished sweep in ``run_dir``."""
    return write(plan, RunDir(run_dir))
