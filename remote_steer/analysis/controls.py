"""The real vector against control vectors (random directions of the same norm and
shuffled-label CAA vectors) on the same items and configurations. Imports no model code.

Per model × dataset × layer × strength: Glass's delta of every control vector (same
items, same unsteered baseline), the real vector's, an empirical one-sided p-value in
the strength's direction, p = (1 + #{controls at least as far as the real one}) /
(1 + #controls), and whether the real delta lies within the controls' range in the
strength's direction: ``within`` unless it moves further that way than every control
(sign(s) · Δ_real > max sign(s) · Δ_control). Random-weight models move the logit diff
the same way for any direction (a second-order effect), so the one-sided range is the
question that matters: does the vector steer further than a direction of its size?
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from remote_steer.analysis import statistics

CONTROL_KINDS = ("random", "shuffled")  # bootstrap vectors are not controls (analysis.uncertainty)


def p_floor(n_controls: int) -> float:
    """The smallest p-value ``n_controls`` control vectors can give: 1 / (K + 1) (the real
    vector beyond every control). 0.2 for four."""
    return 1.0 / (1 + max(0, int(n_controls)))


def controls_needed(p: float = 0.05) -> int:
    """How many control vectors a p-value of ``p`` needs: the smallest K with 1/(K+1) ≤ p
    (19 for 0.05)."""
    import math

    return max(1, math.ceil(1.0 / p - 1 - 1e-9))


def floor_sentence(n_controls: int, p: float = 0.05) -> str:
    """What K controls can show, in one sentence for captions and notes."""
    need = controls_needed(p)
    floor = (
        f"With {n_controls} control vectors the smallest possible p is 1/{n_controls + 1} = {p_floor(n_controls):.2g}"
    )
    if n_controls >= need:
        return f"{floor}."
    return f"{floor}; a p of {p:g} needs at least {need} ([controls] random + shuffled ≥ {need})."


VECTOR = ["kind", "vector"]


def vector_deltas(rows: pd.DataFrame) -> pd.DataFrame:
    """Glass's delta per model × dataset × layer × strength × kind × vector."""
    keys = statistics.CONFIG + VECTOR
    if rows.empty:
        return pd.DataFrame(columns=keys + ["layer_fraction", "n_items", "glass_delta"])
    grouped = rows.groupby(keys, sort=True)
    out = grouped.agg(
        layer_fraction=("layer_fraction", "first"),
        n_items=("logit_diff", "size"),
        steered=("logit_diff", "mean"),
        base=("baseline_logit_diff", "mean"),
        sd=("baseline_logit_diff", "std"),
    ).reset_index()
    with np.errstate(invalid="ignore", divide="ignore"):
        out["glass_delta"] = np.where(out["sd"] > 0, (out["steered"] - out["base"]) / out["sd"], np.nan)
    return out.drop(columns=["steered", "base", "sd"])


def compare(real: pd.DataFrame, controls: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: the real delta (``glass_deltas`` rows), the controls' min, max and
    count, the empirical p-value and ``within`` (see the module docstring)."""
    pool = controls[controls["kind"].isin(CONTROL_KINDS)]
    rows = []
    real_at = real.set_index(statistics.CONFIG)
    for key, group in pool.groupby(statistics.CONFIG, sort=True):
        if key not in real_at.index:
            continue
        value = float(real_at.loc[key, "glass_delta"])
        deltas = group["glass_delta"].dropna().to_numpy(dtype=float)
        direction = np.sign(key[3]) or 1.0
        record = dict(
            zip(statistics.CONFIG, key, strict=True),
            layer_fraction=float(real_at.loc[key, "layer_fraction"]),
            glass_delta=value,
            n_controls=len(deltas),
        )
        if len(deltas) == 0 or np.isnan(value):
            record.update(control_min=np.nan, control_max=np.nan, p_value=np.nan, within=np.nan)
        else:
            record.update(
                control_min=float(deltas.min()),
                control_max=float(deltas.max()),
                control_mean=float(deltas.mean()),
                p_value=float((1 + np.sum(deltas * direction >= value * direction - 1e-12)) / (1 + len(deltas))),
                within=bool(value * direction <= np.max(deltas * direction) + 1e-12),
            )
            for kind in CONTROL_KINDS:
                part = group.loc[group["kind"] == kind, "glass_delta"].dropna()
                record[f"{kind}_min"] = float(part.min()) if len(part) else np.nan
                record[f"{kind}_max"] = float(part.max()) if len(part) else np.nan
        rows.append(record)
    return pd.DataFrame(rows)


def summary(comparison: pd.DataFrame) -> dict[str, int]:
    """Counts of configurations within / outside the controls' range."""
    valid = comparison.dropna(subset=["within"]) if len(comparison) else comparison
    within = int(valid["within"].astype(bool).sum()) if len(valid) else 0
    return {"n": int(len(valid)), "within": within, "outside": int(len(valid)) - within}
