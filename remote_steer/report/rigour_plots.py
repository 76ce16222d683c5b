"""Figures of the rigour sections (norms, cross-fitting, bootstrap vectors, controls),
drawn with the report's conventions (``plots``: Agg backend, Okabe–Ito colours, PNG + SVG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from remote_steer.report.plots import (
    BASELINE_COLOUR,
    CYCLE,
    NEGATIVE_COLOUR,
    POSITIVE_COLOUR,
    _grid,
    _save,
    _short,
    finish,
    floor_scale,
    legend_columns,
)

CONTROL_MARKERS = {"random": "o", "shuffled": "^"}


def _cells(frame: pd.DataFrame, models: Sequence[str], datasets: Sequence[str]):
    present = set(map(tuple, frame[["model", "dataset"]].drop_duplicates().to_numpy()))
    rows = [m for m in models if any((m, d) in present for d in datasets)]
    cols = [d for d in datasets if any((m, d) in present for m in rows)]
    return rows, cols, present


def norms_by_depth(norms: pd.DataFrame, models: Sequence[str], datasets: Sequence[str], stem: Path) -> list[Path]:
    """Per model: vector and residual norms (log scale) and their ratio against depth."""
    order = [m for m in models if m in set(norms["model"])]
    fig, axes = _grid(2, len(order), 3.2, 2.2, sharex="col")
    for j, model in enumerate(order):
        top, bottom = axes[0, j], axes[1, j]
        part = norms[norms["model"] == model]
        for k, dataset in enumerate([d for d in datasets if d in set(part["dataset"])]):
            d = part[part["dataset"] == dataset].sort_values("layer_fraction")
            colour = CYCLE[k % len(CYCLE)]
            top.plot(d["layer_fraction"], d["vector_norm"], "--", color=colour, lw=1.2)
            bottom.plot(d["layer_fraction"], d["ratio"], "-", color=colour, lw=1.4, label=dataset)
        resid = part.groupby("layer_fraction")["residual_norm"].mean()
        top.plot(resid.index, resid.to_numpy(), "-", color="black", lw=1.8)
        top.set_yscale("log")
        top.set_title(_short(model), fontsize=9)
        bottom.set_xlabel("depth (layer + 1) / L", fontsize=8)
        bottom.set_ylim(bottom=0)
        if j == 0:
            top.set_ylabel("L2 norm (log)", fontsize=8)
            bottom.set_ylabel("vector / residual norm", fontsize=8)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color="black", lw=1.8, label="residual stream (mean over steered positions)"),
        Line2D([], [], color="grey", ls="--", lw=1.2, label="CAA vector (colour: dataset)"),
    ]
    handles += [
        Line2D([], [], color=CYCLE[k % len(CYCLE)], lw=1.4, label=d)
        for k, d in enumerate([d for d in datasets if d in set(norms["dataset"])])
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=legend_columns(fig, [str(h.get_label()) for h in handles], fontsize=7),
        fontsize=7,
        frameon=False,
    )
    finish(fig, "Vector and residual-stream norms by depth", order)
    return _save(fig, stem)


def crossfit_dumbbell(cf: pd.DataFrame, stem: Path) -> list[Path]:
    """Per model × dataset: in-sample Glass's delta beside the cross-fitted one (and each half's)."""
    cf = cf.dropna(subset=["crossfit_glass_delta_pos"]).reset_index(drop=True)
    fig, axes = _grid(1, 1, 5.5, 0.28 * len(cf) + 0.6)
    ax = axes[0, 0]
    y = np.arange(len(cf))[::-1]
    for yi, r in zip(y, cf.itertuples(), strict=True):
        ax.plot([r.crossfit_glass_delta_pos, r.glass_delta_pos], [yi, yi], color=BASELINE_COLOUR, lw=1, zorder=1)
    ax.scatter(
        cf["glass_delta_pos"],
        y,
        color=NEGATIVE_COLOUR,
        marker="o",
        s=30,
        zorder=3,
        label="in-sample (layer picked and measured on all items)",
    )
    ax.scatter(
        cf["crossfit_glass_delta_pos"],
        y,
        color=POSITIVE_COLOUR,
        marker="s",
        s=30,
        zorder=3,
        label="cross-fitted (mean of the two halves)",
    )
    for col in ("glass_delta_pos_half_1", "glass_delta_pos_half_2"):
        ax.scatter(cf[col], y, color=POSITIVE_COLOUR, marker="|", s=60, zorder=2, lw=1)
    ax.axvline(0, color="black", lw=0.6)
    floor_scale(ax, "x")  # noise-sized deltas stay near the middle, not spread across the panel
    ax.set_yticks(y)
    ax.set_yticklabels([f"{_short(r.model)} · {r.dataset}" for r in cf.itertuples()], fontsize=7)
    strength = cf["pos_strength"].iloc[0] if len(cf) else float("nan")
    ax.set_xlabel(f"Glass's delta at the best layer, strength {strength:+g} (|: each half)", fontsize=8)
    fig.legend(loc="outside lower center", fontsize=7, frameon=False, ncol=1)
    finish(fig, "In-sample versus cross-fitted Glass's delta at the best layer", cf["model"].unique(), fontsize=10)
    return _save(fig, stem)


def _depth_panels(frame: pd.DataFrame, models: Sequence[str], datasets: Sequence[str]):
    """A model × dataset grid of Glass's-delta-by-depth panels: the figure, and a generator of
    (axes, model, dataset) for the cells ``frame`` has (empty cells switched off, the outer
    panels labelled)."""
    rows, cols, present = _cells(frame, models, datasets)
    # x shared per column: sharing across a whole 6 × 6 grid costs time quadratic in the panels
    fig, axes = _grid(len(rows), len(cols), 2.8, 2.0, sharex="col")

    def panels():
        for i, model in enumerate(rows):
            for j, dataset in enumerate(cols):
                ax = axes[i, j]
                if (model, dataset) not in present:
                    ax.axis("off")
                    continue
                if i == len(rows) - 1:
                    ax.set_xlabel("depth (layer + 1) / L", fontsize=8)
                if j == 0:
                    ax.set_ylabel("Glass's delta", fontsize=8)
                yield ax, model, dataset

    return fig, panels()


def bootstrap_curves(
    real: pd.DataFrame,
    boot: pd.DataFrame,
    best: pd.DataFrame,
    models: Sequence[str],
    datasets: Sequence[str],
    stem: Path,
) -> list[Path]:
    """Per model × dataset: Glass's delta against depth at the strongest positive strength,
    one thin line per bootstrap vector, the real vector thick; dots: each vector's best layer."""
    fig, panels = _depth_panels(boot, models, datasets)
    for ax, model, dataset in panels:
        cell = boot[(boot["model"] == model) & (boot["dataset"] == dataset)]
        strength = (
            cell.loc[cell["strength"] > 0, "strength"].max() if (cell["strength"] > 0).any() else cell["strength"].min()
        )
        sign = 1 if strength > 0 else -1
        for _, vec in cell[cell["strength"] == strength].groupby("vector"):
            vec = vec.sort_values("layer_fraction")
            ax.plot(vec["layer_fraction"], vec["glass_delta"], color=BASELINE_COLOUR, lw=0.7, alpha=0.7)
            if vec["glass_delta"].notna().any():
                top = vec.loc[(vec["glass_delta"] * sign).idxmax()]
                ax.plot(top["layer_fraction"], top["glass_delta"], "o", color=BASELINE_COLOUR, ms=3)
        r = real[(real["model"] == model) & (real["dataset"] == dataset) & (real["strength"] == strength)]
        r = r.sort_values("layer_fraction")
        ax.plot(r["layer_fraction"], r["glass_delta"], color=POSITIVE_COLOUR, lw=2)
        b = best[(best["model"] == model) & (best["dataset"] == dataset)]
        if len(b):
            ax.axvline(b["best_layer_fraction"].iloc[0], color=POSITIVE_COLOUR, lw=0.8, ls=":")
        ax.axhline(0, color="black", lw=0.5)
        floor_scale(ax)
        ax.set_title(f"{_short(model)} · {dataset}  (s = {strength:+g})", fontsize=8)
    from matplotlib.lines import Line2D

    fig.legend(
        handles=[
            Line2D([], [], color=POSITIVE_COLOUR, lw=2, label="real vector (dotted: its best layer)"),
            Line2D(
                [],
                [],
                color=BASELINE_COLOUR,
                lw=0.7,
                marker="o",
                ms=3,
                label="bootstrap vectors (dot: each one's best layer)",
            ),
        ],
        loc="outside lower center",
        ncol=legend_columns(fig, ["bootstrap vectors (dot: each one's best layer)"] * 2, fontsize=7),
        fontsize=7,
        frameon=False,
    )
    finish(fig, "Vector uncertainty: Glass's delta by depth for bootstrap vectors", boot["model"].unique(), fontsize=10)
    return _save(fig, stem)


def controls_by_depth(
    comparison: pd.DataFrame,
    pool: pd.DataFrame,
    models: Sequence[str],
    datasets: Sequence[str],
    stem: Path,
    real: pd.DataFrame | None = None,
) -> list[Path]:
    """Per model × dataset: the real vector's Glass's delta against depth at the strongest
    positive and negative strengths, over the controls' range (band) and values (markers).

    ``real``: the real vector's ``glass_deltas`` with its bootstrap interval (``ci_low``,
    ``ci_high``). Where that interval includes 0 the curve is hatched and its marker hollow,
    and no star is drawn there: a star needs the real vector beyond every control *and* an
    interval clear of 0. Each panel spans at least ±MIN_DELTA_RANGE/2, so noise stays flat."""
    if real is not None and {"ci_low", "ci_high"} <= set(real.columns):
        keys = ["model", "dataset", "layer", "strength"]
        comparison = comparison.merge(real[keys + ["ci_low", "ci_high"]], on=keys, how="left")
    n_controls = int(comparison["n_controls"].max()) if len(comparison) else 0
    fig, panels = _depth_panels(comparison, models, datasets)
    hatched_any = False
    for ax, model, dataset in panels:
        cell = comparison[(comparison["model"] == model) & (comparison["dataset"] == dataset)]
        extremes = [cell["strength"].max(), cell["strength"].min()]
        for strength in dict.fromkeys(extremes):
            colour = POSITIVE_COLOUR if strength > 0 else NEGATIVE_COLOUR
            c = cell[cell["strength"] == strength].sort_values("layer_fraction")
            ax.fill_between(c["layer_fraction"], c["control_min"], c["control_max"], color=colour, alpha=0.15, lw=0)
            ctrl = pool[(pool["model"] == model) & (pool["dataset"] == dataset) & (pool["strength"] == strength)]
            for kind, marker in CONTROL_MARKERS.items():
                k = ctrl[ctrl["kind"] == kind]
                ax.scatter(k["layer_fraction"], k["glass_delta"], marker=marker, s=6, color=colour, alpha=0.45, lw=0)
            ax.plot(c["layer_fraction"], c["glass_delta"], color=colour, lw=1.8)
            if "ci_low" in c:
                spans = ((c["ci_low"] <= 0) & (c["ci_high"] >= 0)).to_numpy()
            else:
                spans = np.zeros(len(c), dtype=bool)
            if spans.any():
                hatched_any = True
                ax.fill_between(
                    c["layer_fraction"],
                    c["ci_low"],
                    c["ci_high"],
                    where=spans,
                    interpolate=True,
                    facecolor="none",
                    edgecolor=colour,
                    hatch="////",
                    lw=0,
                    alpha=0.6,
                )
            ax.scatter(
                c["layer_fraction"],
                c["glass_delta"],
                s=14,
                facecolors=np.where(spans, "white", colour).tolist(),
                edgecolors=colour,
                lw=1,
                zorder=3,
            )
            out = c[~c["within"].astype(bool) & ~spans]
            ax.scatter(
                out["layer_fraction"],
                out["glass_delta"],
                marker="*",
                s=60,
                color=colour,
                zorder=4,
                gid="beyond_controls",
            )
        ax.axhline(0, color="black", lw=0.5)
        floor_scale(ax)
        ax.set_title(f"{_short(model)} · {dataset}", fontsize=8)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    floor = f"p ≥ 1/{n_controls + 1} = {1 / (n_controls + 1):.2g} with {n_controls} controls"
    handles = [
        Line2D([], [], color=POSITIVE_COLOUR, lw=1.8, label="real vector, strongest + strength"),
        Line2D([], [], color=NEGATIVE_COLOUR, lw=1.8, label="real vector, strongest − strength"),
        Patch(color="grey", alpha=0.3, label="controls' range"),
        Line2D([], [], color="grey", marker="o", ls="", ms=3, label="random direction, same norm"),
        Line2D([], [], color="grey", marker="^", ls="", ms=3, label="shuffled-label CAA vector"),
        Line2D([], [], color="grey", marker="*", ls="", ms=7, label=f"beyond every control, CI clear of 0 ({floor})"),
    ]
    if hatched_any:
        handles.append(
            Patch(
                facecolor="white",
                edgecolor="grey",
                hatch="////",
                label="hatched, hollow: real vector's 95% CI includes 0",
            )
        )
    labels = [str(h.get_label()) for h in handles]
    fig.legend(
        handles=handles, loc="outside lower center", ncol=legend_columns(fig, labels, 7, 3), fontsize=7, frameon=False
    )
    finish(fig, "Real vector against control vectors, by depth", comparison["model"].unique(), fontsize=10)
    return _save(fig, stem)
