"""Vector uncertainty: how much the best layer and Glass's delta move when the vector
is re-extracted from bootstrap resamples of the training items (the held-out items and
the baseline stay fixed). Imports no model code."""

from __future__ import annotations

import numpy as np
import pandas as pd

from remote_steer.analysis import statistics


def bootstrap_spread(best: pd.DataFrame, boot_deltas: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per model × dataset: for the K bootstrap vectors, the layer each picks (at the real
    best layer's strength), the share picking the real vector's best layer, the spread of
    the picked depth, and the spread of Glass's delta at the real best layer and at each
    vector's own best layer. ``boot_deltas``: ``controls.vector_deltas`` rows of kind bootstrap."""
    tail = (1 - level) / 2 * 100
    rows = []
    for r in best.itertuples():
        strength = r.pos_strength if not np.isnan(r.pos_strength) else r.neg_strength
        sign = 1.0 if strength > 0 else -1.0
        cell = boot_deltas[
            (boot_deltas["model"] == r.model)
            & (boot_deltas["dataset"] == r.dataset)
            & (boot_deltas["strength"] == strength)
        ]
        if cell.empty:
            continue
        picks, own, at_real, depths = [], [], [], []
        for _, vec in cell.groupby("vector", sort=True):
            score = vec["glass_delta"] * sign
            if not score.notna().any():
                continue
            top = vec.loc[score.idxmax()]
            picks.append(int(top["layer"]))
            depths.append(float(top["layer_fraction"]))
            own.append(float(top["glass_delta"]))
            real_layer = vec.loc[vec["layer"] == r.best_layer, "glass_delta"]
            at_real.append(float(real_layer.iloc[0]) if len(real_layer) else np.nan)
        if not picks:
            continue
        picks_a = np.array(picks)
        values, counts = np.unique(picks_a, return_counts=True)
        rows.append(
            dict(
                model=r.model,
                dataset=r.dataset,
                n_vectors=len(picks),
                strength=strength,
                best_layer=r.best_layer,
                best_layer_fraction=r.best_layer_fraction,
                glass_delta=r.glass_delta_pos if sign > 0 else r.glass_delta_neg,
                mode_layer=int(values[np.argmax(counts)]),
                share_same_layer=float(np.mean(picks_a == r.best_layer)),
                fraction_low=float(np.percentile(depths, tail)),
                fraction_high=float(np.percentile(depths, 100 - tail)),
                fraction_sd=float(np.std(depths, ddof=1)) if len(depths) > 1 else np.nan,
                delta_at_best_low=float(np.nanpercentile(at_real, tail)) if np.isfinite(at_real).any() else np.nan,
                delta_at_best_high=float(np.nanpercentile(at_real, 100 - tail))
                if np.isfinite(at_real).any()
                else np.nan,
                delta_at_best_sd=float(np.nanstd(at_real, ddof=1)) if np.isfinite(at_real).sum() > 1 else np.nan,
                delta_own_low=float(np.percentile(own, tail)),
                delta_own_high=float(np.percentile(own, 100 - tail)),
            )
        )
    return pd.DataFrame(rows)


def best_by_seed(results: pd.DataFrame) -> pd.DataFrame:
    """Per model × dataset × seed (runs merged as replicates): the best layer and Glass's delta."""
    if "seed" not in results.columns or results["seed"].nunique() < 2:
        return pd.DataFrame()
    frames = []
    for seed, part in results.groupby("seed", sort=True):
        frames.append(statistics.best_layers(part).assign(seed=seed))
    return pd.concat(frames, ignore_index=True)
