"""Directional ablation on a finished run (docs/depth.md): each concept's CAA direction
(at its best layer) projected out at every layer and position, on its held-out items,
against the unablated baseline and a seeded random direction; ``engines/ablation.py``.
Writes ``results/ablation.parquet``: one row per model × concept. On in a run with
``[evaluation] ablation = true``; on a finished run, ``scripts/ablation.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
from remote_steer.rundir.files import read_parquet

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


def _wanted(plan, summary: pd.DataFrame) -> list[tuple[Any, str, pd.DataFrame]]:
    """(prepared model, concept, its summary rows by dataset) for every local model × concept
    with a best layer."""
    cells = []
    for prepared in plan.models:
        name = prepared.spec.label
        best = summary[summary["model"] == name].set_index("dataset") if len(summary) else summary
        if prepared.spec.backend == "local":
            cells += [(prepared, c, best) for c in plan.splits if c in best.index]
    return cells


def _up_to_date(store: RunDir, cells) -> pd.DataFrame | None:
    """The saved table, when it is whole and holds exactly these cells at these layers."""
    path = store.results_path(ABLATION_TABLE)
    try:
        saved = read_parquet(path) if path.is_file() else None
    except Exception:  # noqa: BLE001 - a damaged table is computed again
        return None
    if saved is None or saved.empty:
        return None
    want = {(p.spec.label, c, int(best.loc[c, "best_layer"]), len(p.encoded[c][1])) for p, c, best in cells}
    have = set(zip(saved["model"], saved["dataset"], saved["direction_layer"], saved["n_items"], strict=True))
    return saved if have == want else None


def write(plan, store: RunDir, display: Display | None = None, reuse: bool = True) -> pd.DataFrame:
    """Every local model × concept of a prepared plan whose sweep is summarised in ``store``
    (``evaluation.ablation``: the run calls it after the summary; ``scripts/ablation.py`` on
    a finished run). Remote models are skipped with a note. Writes ``results/ablation.parquet``;
    ``reuse``: a whole saved table of the same cells at the same best layers is kept."""
    display = display or NullDisplay()
    remote = [p.spec.label for p in plan.models if p.spec.backend != "local"]
    if remote:
        display.note(f"Directional ablation runs on local models only; skipped: {', '.join(remote)}.")
    cells = _wanted(plan, store.summary())
    saved = _up_to_date(store, cells) if reuse and cells else None
    if saved is not None:
        display.note(f"Directional ablation: results/{ABLATION_TABLE}.parquet is up to date (same best layers).")
        _show(display, saved)
        return saved
    rows: list[dict] = []
    loaded: tuple[str, object] | None = None
    with display.progress("directional ablation", len(cells), "concepts") as task:
        for prepared, concept, best in cells:
            spec = prepared.spec
            if loaded is None or loaded[0] != spec.label:  # one model's weights at a time
                loaded = (spec.label, load_model(prepared.source, dtype=spec.dtype, device=spec.device))
            rows.append(_concept_row(plan, prepared, loaded[1], store, best, concept))
            task.advance()
    frame = pd.DataFrame(rows)
    if not frame.empty:
        for column in ("change_ci", "random_change_ci"):
            frame[[f"{column}_low", f"{column}_high"]] = pd.DataFrame(frame.pop(column).tolist(), index=frame.index)
    store.write_local_results(ABLATION_TABLE, frame)
    if rows:
        _show(display, frame)
    return frame


def _show(display: Display, frame: pd.DataFrame) -> None:
    def shown(mean: float, low: float, high: float) -> str:
        return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"

    several = frame["model"].nunique() > 1
    rows = [
        (
            f"{r.model} · {r.dataset}" if several else r.dataset,
            r.direction_layer,
            f"{r.baseline_mean:+.2f}",
            shown(r.change, r.change_ci_low, r.change_ci_high),
            shown(r.random_change, r.random_change_ci_low, r.random_change_ci_high),
        )
        for r in frame.itertuples()
    ]
    display.table(
        "Directional ablation: change in mean logit diff",
        ["model · concept" if several else "concept", "layer", "baseline", "direction ablated", "random ablated"],
        rows,
        f"Each concept's CAA direction (at its best layer) projected out at every layer, beside a random "
        f"direction; 95% bootstrap intervals over items. Table: results/{ABLATION_TABLE}.parquet.",
    )


def ablation(plan, run_dir: Path) -> pd.DataFrame:
    """Every local model × concept of a prepared plan with a finished sweep in ``run_dir``."""
    return write(plan, RunDir(run_dir), reuse=False)
