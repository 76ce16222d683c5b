"""Honest layer choice: pick the best layer on one half of the held-out items, measure
Glass's delta on the other half, both ways, and average (cross-fitting).

The in-sample best layer is picked on the same items whose delta is then reported, so
its delta is optimistic: under no effect at all it is the maximum of several noisy
deltas. The cross-fitted delta is not: the half that measures never chose. Imports no
model code.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from remote_steer.analysis import statistics


def halves(item_ids, seed: int = 0) -> tuple[set[str], set[str]]:
    """Split item ids into two halves by a seeded hash (a pure function of the ids)."""
    ids = sorted(set(map(str, item_ids)), key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    cut = len(ids) // 2
    return set(ids[:cut]), set(ids[cut:])


def _best_on(rows: pd.DataFrame) -> tuple[float, float, pd.Series, pd.DataFrame]:
    deltas = statistics.glass_deltas(rows)
    pos, neg, best = statistics._pick_best(deltas)
    return pos, neg, best, deltas


def crossfit_best_layers(results: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Per model × dataset: the layer each half picks and Glass's delta at that layer on the
    *other* half (at the strongest positive and negative strengths), and their averages
    (``crossfit_*``), beside the in-sample best layer and delta on all items."""
    in_sample = statistics.best_layers(results)
    rows = []
    for key, cell in results.groupby(statistics.CELL, sort=True):
        first, second = halves(cell["item_id"], seed)
        record = dict(zip(statistics.CELL, key, strict=True))
        if len(first) < 2 or len(second) < 2:
            rows.append(record)
            continue
        picks, pos_deltas, neg_deltas, depths = [], [], [], []
        for choose, measure in ((first, second), (second, first)):
            pos, neg, best, _ = _best_on(cell[cell["item_id"].isin(choose)])
            layer = int(best["layer"])
            measured = statistics.glass_deltas(cell[cell["item_id"].isin(measure) & (cell["layer"] == layer)])
            at = measured.set_index("strength")["glass_delta"]
            picks.append(layer)
            depths.append(float(best["layer_fraction"]))
            pos_deltas.append(float(at.get(pos, np.nan)))
            neg_deltas.append(float(at.get(neg, np.nan)))
        record.update(
            layer_half_1=picks[0],
            layer_half_2=picks[1],
            glass_delta_pos_half_1=pos_deltas[0],
            glass_delta_pos_half_2=pos_deltas[1],
            crossfit_glass_delta_pos=float(np.mean(pos_deltas)),
            crossfit_glass_delta_neg=float(np.mean(neg_deltas)),
            crossfit_fraction=float(np.mean(depths)),
            halves_agree=picks[0] == picks[1],
            n_half_1=len(first),
            n_half_2=len(second),
        )
        rows.append(record)
    columns = [
        "layer_half_1",
        "layer_half_2",
        "glass_delta_pos_half_1",
        "glass_delta_pos_half_2",
        "crossfit_glass_delta_pos",
        "crossfit_glass_delta_neg",
        "crossfit_fraction",
        "halves_agree",
        "n_half_1",
        "n_half_2",
    ]
    halves_frame = pd.DataFrame(rows).reindex(columns=statistics.CELL + columns)  # cells too small to split stay NaN
    return in_sample.merge(halves_frame, on=statistics.CELL, how="left")


def peak_by_strength(results: pd.DataFrame) -> pd.DataFrame:
    """Per model × dataset × strength: the layer with the largest Glass's delta in the
    strength's direction (largest for positive strengths, most negative for negative),
    so one can see whether the peak depth holds across strengths."""
    deltas = statistics.glass_deltas(results)
    deltas = deltas[deltas["strength"] != 0]
    rows = []
    for key, group in deltas.groupby(statistics.CELL + ["strength"], sort=True):
        score = group["glass_delta"] * np.sign(key[2])
        if not score.notna().any():
            continue
        best = group.loc[score.idxmax()]
        rows.append(
            dict(
                zip(statistics.CELL + ["strength"], key, strict=True),
                best_layer=int(best["layer"]),
                best_layer_fraction=float(best["layer_fraction"]),
                glass_delta=float(best["glass_delta"]),
            )
        )
    return pd.DataFrame(
        rows, columns=statistics.CELL + ["strength", "best_layer", "best_layer_fraction", "glass_delta"]
    )


def peak_consistency(peaks: pd.DataFrame) -> pd.DataFrame:
    """Per model × dataset × sign: how far the peak depth moves across that sign's strengths."""
    if peaks.empty:
        return pd.DataFrame(columns=statistics.CELL + ["sign", "n_strengths", "min_fraction", "max_fraction", "spread"])
    frame = peaks.assign(sign=np.where(peaks["strength"] > 0, "+", "−"))
    out = (
        frame.groupby(statistics.CELL + ["sign"], sort=True)
        .agg(
            n_strengths=("strength", "size"),
            min_fraction=("best_layer_fraction", "min"),
            max_fraction=("best_layer_fraction", "max"),
        )
        .reset_index()
    )
    out["spread"] = out["max_fraction"] - out["min_fraction"]
    return out
