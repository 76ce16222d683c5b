"""The report's figures, drawn with matplotlib's Agg backend from analysis tables.

Each function takes DataFrames from ``remote_steer.analysis.statistics`` and a path stem, writes
``stem.png`` and ``stem.svg`` and returns the two paths. Colours are Okabe–Ito
(distinguishable under the common colour-vision deficiencies); the heatmap uses
ColorBrewer's RdBu, which is also colour-blind safe. Callers decide whether a figure
has data; these functions only have to survive thin data (one model, one layer,
NaN deltas) without crashing.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window, and no display needed on a cluster
import matplotlib.pyplot as plt  # noqa: E402 - after matplotlib.use, which must come first
import numpy as np  # noqa: E402 - kept in the sorted block below matplotlib.use
import pandas as pd  # noqa: E402 - kept in the sorted block below matplotlib.use
from matplotlib.lines import Line2D  # noqa: E402 - kept in the sorted block below matplotlib.use
from matplotlib.ticker import MaxNLocator  # noqa: E402 - kept in the sorted block below matplotlib.use

OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
}
TRAINING_COLOURS = {
    "rl": OKABE_ITO["vermillion"],
    "distilled": OKABE_ITO["blue"],
    "random (toy)": OKABE_ITO["green"],
    "unknown": OKABE_ITO["black"],
}
BASELINE_COLOUR, POSITIVE_COLOUR, NEGATIVE_COLOUR = "#8C8C8C", OKABE_ITO["blue"], OKABE_ITO["orange"]
CYCLE = [OKABE_ITO[k] for k in ("blue", "orange", "green", "vermillion", "purple", "sky", "yellow", "black")]
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P"]


def training_colour(training: str) -> str:
    return TRAINING_COLOURS.get(training, OKABE_ITO["purple"])


def _save(fig, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    # the layout is in figure coordinates and fonts are in points, so the PNG's layout holds
    # for the SVG too; not solving it again halves the cost of the second file
    if fig.get_layout_engine() is not None:
        fig.set_layout_engine("none")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def _grid(n_rows: int, n_cols: int, width: float, height: float, **kw):
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(max(4.5, width * n_cols + 1.2), max(3.0, height * n_rows + 1.0)),
        squeeze=False,
        layout="constrained",
        **kw,
    )
    return fig, axes


TOY_CAVEAT = "random-weight toy models (toy/*): every number here is noise; they show the mechanics only"
MIN_DELTA_RANGE = 0.5  # the heatmap's colour scale spans at least ±this: small effects stay pale


def _toy_caveat(fig, models) -> None:
    """The toy caveat drawn in the figure itself, so a copied PNG keeps it."""
    if any(str(m).startswith("toy/") for m in models):
        # above everything (the saved PNG's tight box grows to include it), clear of legends below;
        # wrapped to the figure's width (about 0.07 in per character at 8 pt bold)
        width = max(30, int(fig.get_figwidth() / 0.07))
        fig.text(
            0.5,
            1.005,
            "\n".join(textwrap.wrap(TOY_CAVEAT, width)),
            ha="center",
            va="bottom",
            fontsize=8,
            color=OKABE_ITO["vermillion"],
            weight="bold",
            transform=fig.transFigure,
        )


def finish(fig, title: str, models, fontsize: float = 11) -> None:
    """Every figure's title, and the toy banner when any of ``models`` is a toy."""
    fig.suptitle(title, fontsize=fontsize)
    _toy_caveat(fig, models)


def floor_scale(ax, axis: str = "y", half: float = MIN_DELTA_RANGE / 2) -> None:
    """Glass's delta axes span at least ±``half``: noise-sized effects stay flat instead of
    being autoscaled into something that looks like a finding."""
    get, set_ = (ax.get_ylim, ax.set_ylim) if axis == "y" else (ax.get_xlim, ax.set_xlim)
    lo, hi = get()
    set_(min(lo, -half), max(hi, half))


def legend_columns(fig, labels: Sequence[str], fontsize: float = 8, most: int = 4) -> int:
    """How many columns of a legend under the panels fit the figure's width."""
    longest = max((len(label) for label in labels), default=1)
    per_entry = 0.6 + longest * fontsize / 72 * 0.55  # handle + text, inches
    return max(1, min(most, len(labels), int(fig.get_figwidth() / per_entry)))


def _note(ax, text: str) -> None:
    """A note instead of an empty axis."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey", fontsize=8, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def model_colours(models: Sequence[str]) -> dict[str, str]:
    """One Okabe–Ito colour per model (cycled past eight)."""
    return {m: CYCLE[i % len(CYCLE)] for i, m in enumerate(models)}


def _sign_label(strength: float) -> str:
    return f"{strength:+g}"


# -- per-item distributions -------------------------------------------------------


def _violin(ax, values: np.ndarray, position: float, colour: str) -> None:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return
    if len(values) > 1 and np.ptp(values) > 0:
        parts = ax.violinplot([values], positions=[position], widths=0.8, showextrema=False)
        for body in parts["bodies"]:
            body.set_facecolor(colour)
            body.set_edgecolor(colour)
            body.set_alpha(0.35)
    jitter = (np.random.default_rng(0).random(len(values)) - 0.5) * 0.25
    ax.scatter(position + jitter, values, s=6, color=colour, alpha=0.8, linewidths=0, zorder=3)
    ax.hlines(np.median(values), position - 0.3, position + 0.3, color="black", lw=1.2, zorder=4)


def logit_diff_violins(
    results: pd.DataFrame, best: pd.DataFrame, models: Sequence[str], datasets: Sequence[str], stem: Path
) -> list[Path]:
    """Per model × dataset: per-item logit diff at baseline and at the strongest
    positive and negative strengths, at the cell's best layer."""
    fig, axes = _grid(len(models), len(datasets), 2.4, 2.1)
    for r, model in enumerate(models):
        for c, dataset in enumerate(datasets):
            ax = axes[r, c]
            row = best[(best["model"] == model) & (best["dataset"] == dataset)]
            if row.empty:
                ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes, color="grey")
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                row = row.iloc[0]
                at = results[
                    (results["model"] == model)
                    & (results["dataset"] == dataset)
                    & (results["layer"] == row["best_layer"])
                ]
                groups = []
                neg, pos = row["neg_strength"], row["pos_strength"]
                if not math.isnan(neg):
                    groups.append((_sign_label(neg), at.loc[at["strength"] == neg, "logit_diff"], NEGATIVE_COLOUR))
                groups.append(("baseline", at.drop_duplicates("item_id")["baseline_logit_diff"], BASELINE_COLOUR))
                if not math.isnan(pos):
                    groups.append((_sign_label(pos), at.loc[at["strength"] == pos, "logit_diff"], POSITIVE_COLOUR))
                for i, (_, values, colour) in enumerate(groups):
                    _violin(ax, values.to_numpy(dtype=float), i, colour)
                ax.set_xticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
                ax.set_xlim(-0.6, len(groups) - 0.4)
                ax.axhline(0, color="grey", lw=0.6, ls=":")
                ax.set_title(f"layer {int(row['best_layer'])} ({row['best_layer_fraction']:.0%} depth)", fontsize=8)
                ax.tick_params(axis="y", labelsize=7)
            if r == 0:
                ax.annotate(dataset, (0.5, 1.22), xycoords="axes fraction", ha="center", fontsize=9, weight="bold")
            if c == 0:
                ax.set_ylabel(f"{model}\nlogit diff (match − other)", fontsize=8)
            if r == len(models) - 1:
                ax.set_xlabel("strength", fontsize=8)
    handles = [
        Line2D([], [], marker="o", ls="", color=col, label=lab)
        for lab, col in (
            ("negative strength", NEGATIVE_COLOUR),
            ("unsteered baseline", BASELINE_COLOUR),
            ("positive strength", POSITIVE_COLOUR),
        )
    ]
    handles.append(Line2D([], [], color="black", label="median"))
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    finish(fig, "Per-item logit diff at each cell's best layer", models)
    return _save(fig, stem)


def steerability_strips(slopes: pd.DataFrame, models: Sequence[str], datasets: Sequence[str], stem: Path) -> list[Path]:
    """Per dataset: each item's steerability slope at the cell's best layer, per model;
    anti-steerable items (slope < 0) in vermillion, with their share written above."""
    n_cols = min(3, len(datasets))
    n_rows = math.ceil(len(datasets) / n_cols)
    panel_width = max(2.6, 0.55 * len(models) + 1.0)
    fig, axes = _grid(n_rows, n_cols, panel_width, 2.6)
    rng = np.random.default_rng(0)
    for i, dataset in enumerate(datasets):
        ax = axes.flat[i]
        present = [m for m in models if ((slopes["model"] == m) & (slopes["dataset"] == dataset)).any()]
        for x, model in enumerate(present):
            values = (
                slopes.loc[(slopes["model"] == model) & (slopes["dataset"] == dataset), "slope"].dropna().to_numpy()
            )
            if len(values) == 0:
                continue
            colours = np.where(values < 0, OKABE_ITO["vermillion"], OKABE_ITO["blue"])
            ax.scatter(x + (rng.random(len(values)) - 0.5) * 0.4, values, s=7, c=colours, linewidths=0, alpha=0.8)
            ax.boxplot(
                [values],
                positions=[x],
                widths=0.55,
                showfliers=False,
                medianprops=dict(color="black"),
                boxprops=dict(color="grey"),
                whiskerprops=dict(color="grey"),
                capprops=dict(color="grey"),
            )
            ax.annotate(
                f"{np.mean(values < 0):.0%}",
                (x, 1.0),
                xycoords=("data", "axes fraction"),
                ha="center",
                va="bottom",
                fontsize=7,
                color=OKABE_ITO["vermillion"],
            )
        ax.axhline(0, color="grey", lw=0.7, ls=":")
        names = [_short(m) for m in present]
        fits = max(map(len, names), default=0) * 7 / 72 * 0.6 < 0.9 * panel_width / max(len(present), 1)
        ax.set_xticks(range(len(present)), names, rotation=0 if fits else 90, fontsize=7)
        ax.set_xlim(-0.7, max(len(present), 1) - 0.3)
        ax.set_title(dataset, fontsize=9, pad=14)
        # two short lines: one long line outgrows a 2.6-inch panel and runs into the title
        ax.set_ylabel("slope\n(logit diff / unit strength)", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(datasets) :]:
        ax.set_visible(False)
    handles = [
        Line2D([], [], marker="o", ls="", color=OKABE_ITO["blue"], label="steerable (slope ≥ 0)"),
        Line2D(
            [],
            [],
            marker="o",
            ls="",
            color=OKABE_ITO["vermillion"],
            label="anti-steerable (slope < 0); % above each model",
        ),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    finish(fig, "Per-item steerability at each cell's best layer", models)
    return _save(fig, stem)


def _short(model: str) -> str:
    return model.split("/")[-1] if not model.startswith("toy/") else model


# -- Glass's delta ----------------------------------------------------------------


def delta_heatmap(best: pd.DataFrame, models: Sequence[str], datasets: Sequence[str], stem: Path) -> list[Path]:
    """Glass's delta at the best layer (strongest positive strength), model × dataset,
    annotated with the bootstrap interval. The diverging scale is centred on 0 and
    spans at least ±``MIN_DELTA_RANGE``, so noise-sized deltas stay pale; a cell whose
    interval includes 0 is hatched."""
    from matplotlib.patches import Patch, Rectangle

    values = np.full((len(models), len(datasets)), np.nan)
    spans_zero = np.zeros((len(models), len(datasets)), dtype=bool)
    labels = [["no results"] * len(datasets) for _ in models]
    for row in best.itertuples():
        if row.model in models and row.dataset in datasets:
            r, c = models.index(row.model), datasets.index(row.dataset)
            values[r, c] = row.glass_delta_pos
            ci = ""
            low, high = (
                getattr(row, "glass_delta_pos_ci_low", float("nan")),
                getattr(row, "glass_delta_pos_ci_high", float("nan")),
            )
            if not math.isnan(low):
                ci = f"\n[{low:.2g}, {high:.2g}]"
                spans_zero[r, c] = low <= 0 <= high
            labels[r][c] = f"{row.glass_delta_pos:.2g}{ci}\nL{row.best_layer}"
    fig, ax = plt.subplots(
        figsize=(max(4.5, 1.45 * len(datasets) + 2.4), max(3.4, 0.75 * len(models) + 2.2)), layout="constrained"
    )
    finite = values[np.isfinite(values)]
    limit = max(MIN_DELTA_RANGE, float(np.max(np.abs(finite))) if len(finite) else 0.0)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#EEEEEE")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-limit, vmax=limit, aspect="auto")
    for r in range(len(models)):
        for c in range(len(datasets)):
            if spans_zero[r, c]:
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, hatch="///", edgecolor="#9A9A9A", lw=0))
            dark = np.isfinite(values[r, c]) and abs(values[r, c]) > 0.6 * limit
            ax.text(
                c,
                r,
                labels[r][c],
                ha="center",
                va="center",
                fontsize=7,
                color="white" if dark else "black",
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.7) if spans_zero[r, c] else None,
            )
    ax.set_xticks(range(len(datasets)), datasets, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(models)), models, fontsize=8)
    ax.set_xlabel("dataset")
    ax.set_ylabel("model")
    strength = best["pos_strength"].dropna()
    colourbar = fig.colorbar(image, ax=ax, shrink=0.9)
    colourbar.set_label(f"Glass's delta\n(scale ≥ ±{MIN_DELTA_RANGE:g})", fontsize=8)
    colourbar.ax.tick_params(labelsize=7)
    ax.set_title("cell: Δ, [95% bootstrap CI], L = best layer", fontsize=8)
    if spans_zero.any():
        fig.legend(
            handles=[Patch(facecolor="white", edgecolor="#9A9A9A", hatch="///", label="95% CI includes 0")],
            loc="outside lower center",
            fontsize=7,
            frameon=False,
        )
    at = f", strength {strength.iloc[0]:+g}" if len(strength) else ""
    finish(fig, f"Glass's delta at each cell's best layer{at}", models)
    return _save(fig, stem)


def delta_by_depth(
    deltas: pd.DataFrame, training: dict[str, str], models: Sequence[str], datasets: Sequence[str], stem: Path
) -> list[Path]:
    """Glass's delta at the strongest positive strength against layer depth fraction:
    one colour (and band) per model, line style by training method, one panel per
    dataset plus their mean. Dataset panels: 95% bootstrap CI bands; mean panel: the
    range over datasets."""
    strength = deltas.loc[deltas["strength"] > 0, "strength"]
    strength = strength.max() if len(strength) else deltas["strength"].min()
    at = deltas[deltas["strength"] == strength]
    panels = (["mean over datasets"] if len(datasets) > 1 else []) + list(datasets)
    n_cols = min(3, len(panels))
    fig, axes = _grid(math.ceil(len(panels) / n_cols), n_cols, 3.3, 2.5, sharex=True, sharey=True)
    colours = model_colours(models)
    trainings = sorted({training.get(m, "unknown") for m in models})
    style = {
        m: (LINESTYLES[trainings.index(training.get(m, "unknown")) % len(LINESTYLES)], MARKERS[i % len(MARKERS)])
        for i, m in enumerate(models)
    }
    for ax, panel in zip(axes.flat, panels, strict=False):
        drawn = 0
        for model in models:
            mine = at[at["model"] == model]
            if panel == "mean over datasets":
                grouped = mine.groupby("layer_fraction")["glass_delta"]
                curve = grouped.mean().reset_index()
                band = pd.DataFrame(
                    {
                        "layer_fraction": curve["layer_fraction"],
                        "ci_low": grouped.min().to_numpy(),
                        "ci_high": grouped.max().to_numpy(),
                    }
                )
            else:
                curve = mine[mine["dataset"] == panel].sort_values("layer_fraction")
                band = curve if "ci_low" in curve else None
            if curve.empty:
                continue
            drawn += 1
            ls, marker = style[model]
            ax.plot(
                curve["layer_fraction"],
                curve["glass_delta"],
                color=colours[model],
                ls=ls,
                marker=marker,
                markersize=3,
                lw=1.3,
            )
            if band is not None and band["ci_low"].notna().any():
                ax.fill_between(
                    band["layer_fraction"], band["ci_low"], band["ci_high"], color=colours[model], alpha=0.15, lw=0
                )
        if not drawn:
            _note(ax, "no results for this panel")
        ax.axhline(0, color="grey", lw=0.6, ls=":")
        ax.set_title(
            panel + (" (band: range over datasets)" if panel == "mean over datasets" else " (band: 95% CI)"), fontsize=8
        )
        ax.set_xlabel("layer depth (layer + 1) / L", fontsize=8)
        ax.set_ylabel("Glass's delta", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.xaxis.set_tick_params(labelbottom=True)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    floor_scale(axes.flat[0])  # shared y: noise-sized curves stay flat, not dramatic
    handles = [
        Line2D(
            [],
            [],
            color=colours[m],
            ls=style[m][0],
            marker=style[m][1],
            markersize=4,
            label=f"{m} · {training.get(m, 'unknown')}",
        )
        for m in models
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=legend_columns(fig, [str(h.get_label()) for h in handles]),
        fontsize=8,
        title="model · training (line style: training)",
        title_fontsize=8,
        frameon=False,
    )
    finish(fig, f"Glass's delta by layer depth at strength {strength:+g}", models)
    return _save(fig, stem)


# -- generation -------------------------------------------------------------------


def generation_vs_logit_layers(
    deltas: pd.DataFrame, rates: pd.DataFrame, models: Sequence[str], datasets: Sequence[str], stem: Path
) -> list[Path]:
    """Per model × dataset: Glass's delta of the logit diff (left axis) and the
    generation behaviour change (right axis) against layer depth, at ± strength."""
    cells_models = [m for m in models if (rates["model"] == m).any()]
    cells_datasets = [d for d in datasets if (rates["dataset"] == d).any()]
    # x shared per column: sharing across a whole 6 × 6 grid costs time quadratic in the panels
    fig, axes = _grid(len(cells_models), len(cells_datasets), 3.0, 2.2, sharex="col")
    strengths = sorted(set(rates["strength"]) - {0.0})
    pos = max([s for s in strengths if s > 0], default=None)
    neg = min([s for s in strengths if s < 0], default=None)
    shown = [(s, ls) for s, ls in ((neg, "--"), (pos, "-")) if s is not None]
    drawn_logit: set[float] = set()
    drawn_generation: set[float] = set()
    for r, model in enumerate(cells_models):
        for c, dataset in enumerate(cells_datasets):
            ax = axes[r, c]
            twin = ax.twinx()
            d = deltas[(deltas["model"] == model) & (deltas["dataset"] == dataset)]
            g = rates[(rates["model"] == model) & (rates["dataset"] == dataset)]
            for strength, ls in shown:
                dd = d[d["strength"] == strength].sort_values("layer_fraction").dropna(subset=["glass_delta"])
                gg = g[g["strength"] == strength].sort_values("layer_fraction").dropna(subset=["behavior_change"])
                if len(dd):
                    ax.plot(
                        dd["layer_fraction"],
                        dd["glass_delta"],
                        color=OKABE_ITO["blue"],
                        ls=ls,
                        marker="o",
                        markersize=2.5,
                        lw=1.2,
                    )
                    drawn_logit.add(strength)
                if len(gg):
                    twin.plot(
                        gg["layer_fraction"],
                        gg["behavior_change"],
                        color=OKABE_ITO["vermillion"],
                        ls=ls,
                        marker="s",
                        markersize=2.5,
                        lw=1.2,
                    )
                    drawn_generation.add(strength)
            if g["behavior_change"].notna().sum() == 0:
                twin.text(
                    0.5,
                    0.04,
                    "no valid generated answer:\nno behaviour change to draw",
                    ha="center",
                    va="bottom",
                    transform=twin.transAxes,
                    fontsize=7,
                    color=OKABE_ITO["vermillion"],
                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.85),
                    zorder=5,
                )
                twin.set_yticks([])
            ax.axhline(0, color="grey", lw=0.5, ls=":")
            ax.tick_params(axis="y", colors=OKABE_ITO["blue"], labelsize=7)
            ax.tick_params(axis="x", labelsize=7)
            twin.tick_params(axis="y", colors=OKABE_ITO["vermillion"], labelsize=7)
            floor_scale(ax)  # noise-sized deltas stay flat
            _align_zero(ax, twin)
            if r == 0:
                ax.set_title(dataset, fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{model}\nGlass's delta (logit diff)", fontsize=8, color=OKABE_ITO["blue"])
            if c == len(cells_datasets) - 1:
                twin.set_ylabel("behaviour change (generation)", fontsize=8, color=OKABE_ITO["vermillion"])
            if r == len(cells_models) - 1:
                ax.set_xlabel("layer depth (layer + 1) / L", fontsize=8)
    handles = []
    for strength, ls in shown:
        if strength in drawn_logit:
            handles.append(
                Line2D(
                    [],
                    [],
                    color=OKABE_ITO["blue"],
                    ls=ls,
                    marker="o",
                    markersize=3,
                    label=f"logit-diff Glass's delta, strength {strength:+g}",
                )
            )
        if strength in drawn_generation:
            handles.append(
                Line2D(
                    [],
                    [],
                    color=OKABE_ITO["vermillion"],
                    ls=ls,
                    marker="s",
                    markersize=3,
                    label=f"generation behaviour change, strength {strength:+g}",
                )
            )
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    finish(fig, "Logit-diff effect and generation behaviour change by layer", cells_models)
    return _save(fig, stem)


def _align_zero(ax, twin) -> None:
    """Put zero at the same height on both y axes, so the two curves' signs read alike."""
    lo1, hi1 = ax.get_ylim()
    lo2, hi2 = twin.get_ylim()
    f = max(-lo1 / (hi1 - lo1) if hi1 > lo1 else 0.5, -lo2 / (hi2 - lo2) if hi2 > lo2 else 0.5, 0.05)
    f = min(f, 0.95)
    for axis, (lo, hi) in ((ax, (lo1, hi1)), (twin, (lo2, hi2))):
        span = max(hi / (1 - f) if hi > 0 else 0, -lo / f if lo < 0 else 0, 1e-9)
        axis.set_ylim(-f * span, (1 - f) * span)


def effect_scatter(joined: pd.DataFrame, datasets: Sequence[str], stem: Path) -> list[Path]:
    """Every model × dataset × layer × strength present in both tables: logit-diff
    Glass's delta against generation behaviour change."""
    fig, ax = plt.subplots(figsize=(6.8, 4.6), layout="constrained")
    colours = {d: CYCLE[i % len(CYCLE)] for i, d in enumerate(datasets)}
    for dataset in datasets:
        for sign, marker in ((1, "^"), (-1, "v")):
            sel = joined[(joined["dataset"] == dataset) & (np.sign(joined["strength"]) == sign)]
            if len(sel):
                ax.scatter(
                    sel["glass_delta"],
                    sel["behavior_change"],
                    s=24,
                    marker=marker,
                    color=colours[dataset],
                    alpha=0.75,
                    linewidths=0,
                )
    ax.axhline(0, color="grey", lw=0.6, ls=":")
    ax.axvline(0, color="grey", lw=0.6, ls=":")
    floor_scale(ax, "x")  # noise-sized deltas bunch at 0 rather than spread into a pattern
    ok = joined[["glass_delta", "behavior_change"]].dropna()
    r = (
        np.corrcoef(ok["glass_delta"], ok["behavior_change"])[0, 1]
        if len(ok) > 2 and ok.std().min() > 0
        else float("nan")
    )
    ax.set_xlabel("logit-diff effect (Glass's delta)")
    ax.set_ylabel("generation behaviour change (steered − baseline rate)")
    ax.set_title(f"Pearson r = {r:.2f} over all points", fontsize=8)
    handles = [Line2D([], [], marker="o", ls="", color=colours[d], label=d) for d in datasets]
    handles += [
        Line2D([], [], marker="^", ls="", color="grey", label="positive strength"),
        Line2D([], [], marker="v", ls="", color="grey", label="negative strength"),
    ]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    finish(fig, "Logit-diff effect vs generation effect", joined["model"].unique() if "model" in joined else [])
    return _save(fig, stem)


def validity_by_size(validity: pd.DataFrame, sizes: dict[str, float | None], stem: Path) -> list[Path]:
    """Generation validity rate per model (ordered by parameter count) and strength: markers
    side by side within each model's slot, no lines (the models are categories, not a scale)."""
    models = sorted(validity["model"].unique(), key=lambda m: (sizes.get(m) is None, sizes.get(m) or 0, m))
    labels = [f"{_short(m)}\n{_size_label(sizes.get(m))}" for m in models]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(models) + 2.5), 3.8), layout="constrained")
    strengths = sorted(validity["strength"].unique())  # legend order: −, baseline, +
    negatives = [s for s in strengths if s < 0]
    positives = [s for s in strengths if s > 0]
    offsets = np.linspace(-0.3, 0.3, len(strengths)) if len(strengths) > 1 else np.zeros(1)
    for offset, strength in zip(offsets, strengths, strict=True):
        at = validity[validity["strength"] == strength].set_index("model").reindex(models)
        if strength == 0:
            colour, label, marker = BASELINE_COLOUR, "baseline (unsteered)", "o"
        elif strength > 0:
            colour, marker = POSITIVE_COLOUR, "^"
            label = f"strength {strength:+g}"
        else:
            colour, marker = NEGATIVE_COLOUR, "v"
            label = f"strength {strength:+g}"
        # several strengths of one sign: fade the weaker ones so each stays distinguishable
        group = positives if strength > 0 else negatives if strength < 0 else [0]
        alpha = 0.4 + 0.6 * (abs(strength) / max(abs(s) for s in group) if strength else 1)
        ax.plot(
            np.arange(len(models)) + offset,
            at["valid_rate"],
            marker=marker,
            ls="",
            color=colour,
            alpha=alpha,
            label=label,
        )
    for boundary in np.arange(len(models) - 1) + 0.5:  # slot edges: each model is its own column
        ax.axvline(boundary, color="grey", lw=0.5, alpha=0.4)
    ax.set_xticks(range(len(models)), labels, fontsize=8)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlim(-0.5, len(models) - 0.5)
    ax.set_xlabel("model (total parameters)")
    ax.set_ylabel("valid answer rate")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    finish(fig, "Generation validity by model size and steering strength", models)
    return _save(fig, stem)


def _size_label(size: float | None) -> str:
    if size is None:
        return "size unknown"
    return f"{size:g}B" if size >= 1 else f"{size * 1000:.0f}M"
