"""Summaries of the depth analyses' tables (docs/depth.md), pandas only (the report imports
them without torch): which method steers best at its own layer, how specific each model's
vectors are."""

from __future__ import annotations

import pandas as pd

METHODS = ("mean_diff", "pca", "probe", "whitened")  # analysis/directions.py, in this order


def at_best(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model × dataset × method (``results/methods.parquet``): the layer where the
    strongest positive strength moves the logit diff most, and Glass's delta there with
    its interval."""
    top = frame[frame["strength"] == frame["strength"].max()]
    index = top.groupby(["model", "dataset", "method"])["glass_delta"].idxmax().dropna()
    return top.loc[index].reset_index(drop=True)


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
