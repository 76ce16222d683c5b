"""A layer predictor (docs/depth.md): the best steering layer from decodability alone.

``predict_layer`` reads one model × concept's decodability curve (a column of
``results/decodability.parquet``) and returns the layer where the concept has
become readable: the first layer whose value reaches ``ONSET`` of the way from
chance to the curve's maximum. ``window`` is the sweep layers within ``HALF_WIDTH``
of it, what ``layers = "predicted"`` would sweep. ``compare`` sets the predictions
beside a full sweep's best layers: Spearman ρ over the cells with a bootstrap
interval (cells resampled), the share of sweep configurations the window saves and
how often it contains the full sweep's best layer. ``window_check`` sets a run that
swept only the window (``layer_window = "predicted"``) beside the full sweep of the
same spec: the configurations it saved, whether its window held the full sweep's best
layer, and Glass's delta at each run's best.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from remote_steer.models.registry import layer_depth

PREDICTOR_TABLE = "layer_predictor"
SIGNAL = "probe_accuracy"  # the curve the prediction reads
ONSET = 0.9  # first layer at chance + ONSET × (max − chance)
HALF_WIDTH = 0.15  # the window: sweep layers within this depth fraction of the prediction
CHANCE = {"caa_accuracy": 0.5, "probe_accuracy": 0.5, "lens_agreement": 0.5}


def predict_layer(curve: pd.DataFrame, signal: str = SIGNAL, onset: float = ONSET) -> int:
    """The first layer whose ``signal`` reaches chance + onset × (max − chance); the
    curve's own first layer when it never rises above chance."""
    ordered = curve.sort_values("layer")
    values = ordered[signal].to_numpy(dtype=float)
    chance = CHANCE.get(signal, float(values.min()))
    top = float(values.max())
    if top <= chance:
        return int(ordered["layer"].iloc[0])
    reached = np.flatnonzero(values >= chance + onset * (top - chance))
    return int(ordered["layer"].iloc[int(reached[0])])


def window(predicted: int, sweep_layers: list[int], n_layers: int, half_width: float = HALF_WIDTH) -> list[int]:
    """Sweep layers within ``half_width`` × n_layers of the prediction (at least the nearest one)."""
    reach = half_width * n_layers
    inside = [layer for layer in sweep_layers if abs(layer - predicted) <= reach]
    return inside or [min(sweep_layers, key=lambda layer: abs(layer - predicted))]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ (average ranks for ties); NaN when either side is constant."""
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def spearman_interval(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of ρ, cells resampled with replacement
    (draws where a side is constant are dropped; NaN if none is left)."""
    rng = np.random.default_rng(seed)
    n = len(a)
    draws = []
    for _ in range(n_boot):
        pick = rng.integers(0, n, n)
        rho = spearman(a[pick], b[pick])
        if not np.isnan(rho):
            draws.append(rho)
    if not draws:
        return float("nan"), float("nan")
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def compare(
    decodability: pd.DataFrame,
    summary: pd.DataFrame,
    sweep_layers: dict[str, list[int]],
    signal: str = SIGNAL,
    half_width: float = HALF_WIDTH,
) -> pd.DataFrame:
    """One row per model × dataset with a decodability curve and a swept best layer:
    predicted layer and depth, the window, the swept best, whether the window holds it,
    and the share of the sweep's layers (so configurations) the window saves."""
    rows = []
    for (model, dataset), curve in decodability.groupby(["model", "dataset"], sort=True):
        best = summary[(summary["model"] == model) & (summary["dataset"] == dataset)]
        if best.empty or model not in sweep_layers:
            continue
        n_layers = int(curve["n_layers"].iloc[0])
        layers = sweep_layers[model]
        predicted = predict_layer(curve, signal)
        inside = window(predicted, layers, n_layers, half_width)
        best_layer = int(best["best_layer"].iloc[0])
        rows.append(
            {
                "model": model,
                "dataset": dataset,
                "signal": signal,
                "predicted_layer": predicted,
                "predicted_fraction": layer_depth(predicted, n_layers),
                "best_layer": best_layer,
                "best_fraction": layer_depth(best_layer, n_layers),
                "window_first": min(inside),
                "window_last": max(inside),
                "window_layers": len(inside),
                "sweep_layers": len(layers),
                "saved": 1 - len(inside) / len(layers),
                "hit": best_layer in inside,
                "n_layers": n_layers,
            }
        )
    return pd.DataFrame(rows)


def summarise(cells: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """Over the cells: ρ(predicted, swept best depth) with its interval, mean saving, hit rate."""
    if cells.empty:
        return {}
    a, b = cells["predicted_fraction"].to_numpy(), cells["best_fraction"].to_numpy()
    low, high = spearman_interval(a, b, seed=seed)
    return {
        "cells": len(cells),
        "rho": spearman(a, b),
        "rho_low": low,
        "rho_high": high,
        "saved": float(cells["saved"].mean()),
        "hit_rate": float(cells["hit"].mean()),
        # a window of the same size placed at random among the sweep's layers
        "chance_hit_rate": float((cells["window_layers"] / cells["sweep_layers"]).mean()),
    }


CELL = ["model", "dataset"]


def _swept(logit: pd.DataFrame) -> pd.DataFrame:
    """Per model × dataset: the layers swept and the layer × strength configurations."""
    configurations = logit[[*CELL, "layer", "strength"]].drop_duplicates()
    return pd.DataFrame(
        {
            "layers": logit.groupby(CELL, sort=True)["layer"].agg(lambda s: sorted(int(x) for x in s.unique())),
            "configurations": configurations.groupby(CELL, sort=True).size(),
        }
    )


def window_check(
    full_logit: pd.DataFrame, full_best: pd.DataFrame, window_logit: pd.DataFrame, window_best: pd.DataFrame
) -> pd.DataFrame:
    """A ``layer_window = "predicted"`` run set beside the full sweep of the same spec, one row
    per model × dataset both ran: configurations swept by each and the share saved, the
    window's layers, the full sweep's best layer and whether the window holds it (``hit``),
    the chance a random window of the window's size among the full sweep's layers holds it,
    and Glass's delta at each run's best layer (strongest positive strength). The logit
    tables need model, dataset, layer and strength; the best tables are ``best_layers``'."""
    full, win = _swept(full_logit), _swept(window_logit)
    full_at = full_best.set_index(CELL)
    win_at = window_best.set_index(CELL)
    rows = []
    for key in [k for k in full.index if k in win.index and k in full_at.index and k in win_at.index]:
        layers = win.loc[key, "layers"]
        best = int(full_at.loc[key, "best_layer"])
        rows.append(
            {
                "model": key[0],
                "dataset": key[1],
                "window_layers": layers,
                "sweep_layers": len(full.loc[key, "layers"]),
                "configurations": int(win.loc[key, "configurations"]),
                "full_configurations": int(full.loc[key, "configurations"]),
                "saved": 1 - win.loc[key, "configurations"] / full.loc[key, "configurations"],
                "full_best_layer": best,
                "window_best_layer": int(win_at.loc[key, "best_layer"]),
                "hit": best in layers,
                "chance": len(layers) / len(full.loc[key, "layers"]),
                "window_delta": float(win_at.loc[key, "glass_delta_pos"]),
                "full_delta": float(full_at.loc[key, "glass_delta_pos"]),
            }
        )
    return pd.DataFrame(rows)


def window_check_summary(cells: pd.DataFrame) -> pd.DataFrame:
    """Per model, over ``window_check``'s rows: concepts, configurations swept (window / full)
    and the share saved, hits and the hit rate beside a same-size random window's, and the
    mean Glass's delta at the window's best and at the full sweep's best."""
    rows = []
    for model, group in cells.groupby("model", sort=False):
        window, full = int(group["configurations"].sum()), int(group["full_configurations"].sum())
        rows.append(
            {
                "model": model,
                "concepts": len(group),
                "configurations": window,
                "full_configurations": full,
                "saved": 1 - window / full,
                "hits": int(group["hit"].sum()),
                "hit_rate": float(group["hit"].mean()),
                "chance_hit_rate": float(group["chance"].mean()),
                "window_delta": float(group["window_delta"].mean()),
                "full_delta": float(group["full_delta"].mean()),
            }
        )
    return pd.DataFrame(rows)
