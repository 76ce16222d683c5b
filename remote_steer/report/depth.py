"""The report's depth section (docs/depth.md): decodability by depth, the layer predictor
and the figure that puts readable, lens and steering curves on one depth axis.

``section`` takes the runs' ``results/decodability.parquet`` rows (``report.rigour.load_tables``)
and the report's Glass's deltas and best layers; it returns tables, figures to draw and the
numeric tables to write, as ``report.rigour.sections`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from remote_steer.analysis import layer_predictor as predictor
from remote_steer.report.base import FigurePlan, Table

FIGURES = ("depth_readable_vs_steering", "side_effects", "methods")


@dataclass
class DepthSection:
    tables: list[Table] = field(default_factory=list)
    figures: list[FigurePlan] = field(default_factory=list)
    numeric: dict[str, pd.DataFrame] = field(default_factory=dict)


def _onsets(decodability: pd.DataFrame) -> pd.DataFrame:
    """Per model: mean depth where each curve reaches its onset (``predictor.predict_layer``)."""
    rows = []
    for (model, dataset), curve in decodability.groupby(["model", "dataset"], sort=True):
        n_layers = int(curve["n_layers"].iloc[0])
        row = {"model": model, "dataset": dataset}
        for signal in ("probe_accuracy", "caa_accuracy", "lens_agreement"):
            row[signal] = (predictor.predict_layer(curve, signal) + 1) / n_layers
        row["probe_peak"] = float(curve["probe_accuracy"].max())
        rows.append(row)
    return pd.DataFrame(rows)


def _full_sweep_cells(logit: pd.DataFrame, best: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The best-layer cells that swept every layer their model swept, and how many did not
    (a predicted window, or a partial run): only full sweeps test the predictor."""
    per_cell = logit.groupby(["model", "dataset"])["layer"].nunique()
    union = logit.groupby("model")["layer"].nunique()
    short = {cell for cell, n in per_cell.items() if n < union[cell[0]]}
    keep = [(m, d) not in short for m, d in zip(best["model"], best["dataset"], strict=True)]
    return best[keep], int(len(best) - sum(keep))


def section(
    decodability: pd.DataFrame | None, logit: pd.DataFrame, deltas: pd.DataFrame, best: pd.DataFrame, models
) -> DepthSection:
    out = DepthSection()
    if decodability is None or decodability.empty:  # runs from before decodability: no section
        return out
    sweep_layers = {m: sorted(int(x) for x in g.unique()) for m, g in logit.groupby("model")["layer"]}
    full, windowed = _full_sweep_cells(logit, best)
    cells = predictor.compare(decodability, full, sweep_layers)
    onsets = _onsets(decodability)
    folds = int(decodability["folds"].max())
    out.numeric.update(decodability=decodability, layer_predictor=cells, depth_onsets=onsets)
    by_model = onsets.groupby("model", sort=False).mean(numeric_only=True)
    steer = best.groupby("model")["best_layer_fraction"].mean()
    training = logit.groupby("model")["training"].first()
    rows = []
    for model in [m for m in models if m in by_model.index]:
        r = by_model.loc[model]
        rows.append(
            {
                "model": model,
                "training": training.get(model, "unknown"),
                "readable (probe)": f"{r['probe_accuracy']:.2f}",
                "readable (CAA)": f"{r['caa_accuracy']:.2f}",
                "lens agrees": f"{r['lens_agreement']:.2f}",
                "best probe acc.": f"{r['probe_peak']:.2f}",
                "steers best": f"{steer.get(model, float('nan')):.2f}",
            }
        )
    out.tables.append(
        Table(
            "depth_readable",
            "Depth where the concept becomes readable, next to where it steers best",
            pd.DataFrame(rows),
            "Mean over concepts of the depth (layer output / layers) where each curve first reaches "
            f"{predictor.ONSET:.0%} of its rise from chance; held-out: item-stratified {folds}-fold cross-validation "
            "on the training items; 'steers best': the sweep's best layer."
            + (
                f' {windowed} cells swept fewer layers than their model (layer_window = "predicted"): '
                "their best is the window's, and they are left out of the layer predictor's comparison "
                "(in the window by construction)."
                if windowed
                else ""
            ),
        )
    )
    summary = predictor.summarise(cells)
    if summary:
        table = pd.DataFrame(
            [
                {
                    "cells": summary["cells"],
                    "Spearman ρ": f"{summary['rho']:.2f}",
                    "95% interval": f"[{summary['rho_low']:.2f}, {summary['rho_high']:.2f}]",
                    "configurations saved": f"{summary['saved']:.0%}",
                    "window holds best layer": f"{summary['hit_rate']:.0%}",
                    "same-size random window": f"{summary['chance_hit_rate']:.0%}",
                }
            ]
        )
        out.tables.append(
            Table(
                "layer_predictor",
                "Layer predictor: predicted vs swept best layer",
                table,
                f"Prediction: the first layer where the {predictor.SIGNAL.replace('_', ' ')} reaches "
                f"{predictor.ONSET:.0%} of "
                f"its rise; window: sweep layers within {predictor.HALF_WIDTH:.0%} of the depth. ρ over cells, "
                "interval by resampling cells (few cells: wide).",
            )
        )

    def draw(stem: Path) -> list[Path]:
        from remote_steer.report.depth_plots import depth_panel

        shown = [m for m in models if m in set(decodability["model"])]
        return depth_panel(decodability, deltas, best, cells, shown, stem)

    out.figures.append(FigurePlan(FIGURES[0], "Readable, logit lens and steering curves on one depth axis", draw))
    return out


def side_effects_section(frame: pd.DataFrame | None, models) -> DepthSection:
    """The side-effects matrix (``results/side_effects.parquet``, run/side_effects.py): the
    specificity table and the matrix figure; nothing for runs without it."""
    from remote_steer.analysis.summaries import specificity

    out = DepthSection()
    if frame is None or frame.empty:
        return out
    shown = [m for m in models if m in set(frame["model"])]
    frame = frame[frame["model"].isin(shown)]
    table = specificity(frame)
    out.numeric.update(side_effects=frame, specificity=table)
    strength = ", ".join(f"{s:+g}" for s in sorted(frame["strength"].unique()))
    out.tables.append(
        Table(
            "side_effects",
            "Side effects: a vector on its own concept's items against the other concepts'",
            table.assign(
                diagonal=table["diagonal"].map("{:+.2f}".format),
                off_diagonal_abs=table["off_diagonal_abs"].map("{:.2f}".format),
                ratio=table["ratio"].map("{:.2f}".format),
            ).rename(
                columns={
                    "diagonal": "own concept (mean Δ)",
                    "off_diagonal_abs": "other concepts (mean size of Δ)",
                    "ratio": "ratio",
                    "off_diagonal_excluding_0": "other cells whose CI excludes 0",
                    "off_diagonal_cells": "other cells",
                }
            ),
            "Each concept's vector at its own best layer and strength "
            f"{strength}, on every concept's held-out items (Glass's delta, 95% bootstrap interval over items). "
            "The own-concept cells are the sweep's; the whole matrix: the figure and tables/side_effects.csv.",
        )
    )

    def draw(stem: Path) -> list[Path]:
        from remote_steer.report.depth_plots import side_effects_matrix

        return side_effects_matrix(frame, shown, stem)

    out.figures.append(FigurePlan(FIGURES[1], "Side effects: each vector on every concept's items", draw))
    return out


def methods_section(frame: pd.DataFrame | None, models) -> DepthSection:
    """The extraction methods (``results/methods.parquet``, run/methods_stage.py): Glass's
    delta of each method at its own best layer, a table and a figure; nothing without it."""
    from remote_steer.analysis.summaries import METHODS, at_best

    out = DepthSection()
    if frame is None or frame.empty:
        return out
    shown = [m for m in models if m in set(frame["model"])]
    best = at_best(frame[frame["model"].isin(shown)])
    out.numeric.update(methods=frame, methods_best=best)
    rows = []
    for model in shown:
        cell = best[best["model"] == model]
        winners = cell.loc[cell.groupby("dataset")["glass_delta"].idxmax(), "method"].value_counts()
        row: dict[str, object] = {"model": model, "concepts": cell["dataset"].nunique()}
        for method in METHODS:
            mine = cell[cell["method"] == method]
            row[method.replace("_", " ")] = f"{mine['glass_delta'].mean():+.2f} ({mine['layer_fraction'].mean():.2f})"
        row["best per concept"] = ", ".join(f"{m.replace('_', ' ')} {n}" for m, n in winners.items())
        rows.append(row)
    strength = float(best["strength"].max())
    out.tables.append(
        Table(
            "methods",
            "Which direction steers best: extraction methods on the same held-out items",
            pd.DataFrame(rows),
            f"Mean over concepts of Glass's delta at each method's own best layer (+{strength:g} × the layer's "
            "mean residual norm), its mean depth in brackets. The best layer is picked on the same items, so "
            "every value is biased upward alike; per-concept intervals in the figure and tables/methods_best.csv.",
        )
    )

    def draw(stem: Path) -> list[Path]:
        from remote_steer.report.depth_plots import methods_by_delta

        return methods_by_delta(best, shown, stem)

    out.figures.append(FigurePlan(FIGURES[2], "Extraction methods at their own best layers", draw))
    return out


def ablation_section(frame: pd.DataFrame | None, models) -> DepthSection:
    """Directional ablation (``results/ablation.parquet``, run/ablation_stage.py): per model ×
    concept, the logit diff's change with the direction projected out, beside a random
    direction's; a table only, nothing for runs without it."""
    out = DepthSection()
    if frame is None or frame.empty:
        return out
    frame = frame[frame["model"].isin(models)]

    def interval(value, low, high) -> str:
        star = "*" if low > 0 or high < 0 else ""
        return f"{value:+.2f}{star} [{low:+.2f}, {high:+.2f}]"

    table = pd.DataFrame(
        [
            {
                "model": r.model,
                "dataset": r.dataset,
                "direction layer": int(r.direction_layer),
                "baseline": f"{r.baseline_mean:+.2f}",
                "change, direction ablated": interval(r.change, r.change_ci_low, r.change_ci_high),
                "change, random ablated": interval(r.random_change, r.random_change_ci_low, r.random_change_ci_high),
            }
            for r in frame.itertuples()
        ]
    )
    out.numeric.update(ablation=frame)
    out.tables.append(
        Table(
            "ablation",
            "Directional ablation: the concept's direction projected out at every layer",
            table,
            "Mean change of the logit diff (matching − not matching) on the held-out items when the CAA "
            "direction at its best layer is projected out of the residual at every layer and position, beside "
            "a seeded random direction of the same norm; 95% bootstrap interval over items, * where it excludes "
            "0. The comparison with the random direction, not the change alone, is the result.",
        )
    )
    return out
