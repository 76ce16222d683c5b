"""Statistics over saved results. Imports no model code: it runs on results files alone."""

from __future__ import annotations

import numpy as np
import pandas as pd

CELL = ["model", "dataset"]


def glass_delta(steered: np.ndarray, baseline: np.ndarray) -> float:
    """(mean(steered) − mean(baseline)) / SD(baseline), SD with ddof=1.

    Glass's delta scales the shift by the baseline spread only, since steering
    can change the spread of the steered condition.
    """
    sd = float(np.std(baseline, ddof=1)) if len(baseline) > 1 else float("nan")
    if not sd > 0:
        return float("nan")
    return (float(np.mean(steered)) - float(np.mean(baseline))) / sd


def glass_deltas(results: pd.DataFrame) -> pd.DataFrame:
    """One row per model × dataset × layer × strength with Glass's delta and means."""
    rows = []
    for key, group in results.groupby(CELL + ["layer", "strength"], sort=True):
        baseline = group["baseline_logit_diff"].to_numpy()
        steered = group["logit_diff"].to_numpy()
        rows.append(
            dict(
                zip(CELL + ["layer", "strength"], key),
                layer_fraction=float(group["layer_fraction"].iloc[0]),
                n_items=len(group),
                baseline_mean=float(baseline.mean()),
                steered_mean=float(steered.mean()),
                glass_delta=glass_delta(steered, baseline),
            )
        )
    return pd.DataFrame(rows)


def best_layers(results: pd.DataFrame) -> pd.DataFrame:
    """Per model × dataset: the layer where the strongest positive strength moves the
    logit diff most (largest Glass's delta), and Glass's delta there at the strongest
    positive and negative strengths."""
    deltas = glass_deltas(results)
    rows = []
    for key, cell in deltas.groupby(CELL, sort=True):
        positive = cell[cell["strength"] > 0]
        negative = cell[cell["strength"] < 0]
        pos_strength = float(positive["strength"].max()) if len(positive) else float("nan")
        neg_strength = float(negative["strength"].min()) if len(negative) else float("nan")
        if len(positive):
            ranked = positive[positive["strength"] == pos_strength]
            best = ranked.loc[ranked["glass_delta"].idxmax()]
        else:  # only negative strengths: the layer that moves most against the behaviour
            ranked = negative[negative["strength"] == neg_strength]
            best = ranked.loc[ranked["glass_delta"].idxmin()]
        layer = int(best["layer"])
        at_layer = cell[cell["layer"] == layer].set_index("strength")["glass_delta"]
        rows.append(
            dict(
                zip(CELL, key),
                best_layer=layer,
                best_layer_fraction=float(best["layer_fraction"]),
                pos_strength=pos_strength,
                glass_delta_pos=float(at_layer.get(pos_strength, float("nan"))),
                neg_strength=neg_strength,
                glass_delta_neg=float(at_layer.get(neg_strength, float("nan"))),
                n_items=int(best["n_items"]),
            )
        )
    return pd.DataFrame(rows)
