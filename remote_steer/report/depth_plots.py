"""The study's question drawn (docs/depth.md): where a concept is readable, where the
logit lens reads the model's answer, and where adding the vector steers, on one depth axis.

One column per model. Top: held-out accuracy of the CAA direction and of the probe
(chance 0.5 dashed) and the logit lens's sign agreement with the model's final answer,
each the mean over concepts with a band from the lowest to the highest concept.
Bottom: Glass's delta of the strongest positive strength per swept layer, one thin
line per concept and their mean; the swept best layers (crosses) and the predicted
layers (triangles, ``layer_predictor``) on the same axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from remote_steer.report.plots import OKABE_ITO, _grid, _save, finish, floor_scale

CURVES = (
    ("probe_accuracy", "probe (held-out acc.)", OKABE_ITO["blue"], "-"),
    ("caa_accuracy", "CAA direction (held-out acc.)", OKABE_ITO["orange"], "--"),
    ("lens_agreement", "logit-lens sign = final answer (1 at last layer)", OKABE_ITO["green"], ":"),
)
STEER_COLOUR = OKABE_ITO["vermillion"]


def _readable(ax, frame: pd.DataFrame) -> None:
    for column, label, colour, style in CURVES:
        by_layer = frame.groupby("layer_fraction")[column]
        mean, low, high = by_layer.mean(), by_layer.min(), by_layer.max()
        ax.fill_between(mean.index, low.to_numpy(), high.to_numpy(), color=colour, alpha=0.12, linewidth=0)
        ax.plot(mean.index, mean.to_numpy(), style, color=colour, label=label, linewidth=1.6)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_ylim(0.0, 1.02)
    ax.set_ylabel("accuracy / agreement")


def _steering(ax, deltas: pd.DataFrame, best: pd.DataFrame, predicted: pd.DataFrame) -> None:
    if deltas.empty:
        ax.text(0.5, 0.5, "no logit sweep", ha="center", va="center", transform=ax.transAxes, color="grey")
        return
    strength = float(deltas["strength"].max())
    at = deltas[deltas["strength"] == strength]
    label = f"steering Δ at {strength:+g}"
    by_layer = at.groupby("layer_fraction")["glass_delta"]
    # the mean only where every concept was swept (a predicted window sweeps a subset each)
    mean = by_layer.mean()[by_layer.count() == at["dataset"].nunique()]
    for i, (_, cell) in enumerate(at.groupby("dataset")):
        cell = cell.sort_values("layer_fraction")
        thin = label + " (each concept)" if mean.empty and i == 0 else None
        ax.plot(cell["layer_fraction"], cell["glass_delta"], color=STEER_COLOUR, alpha=0.3, linewidth=0.8, label=thin)
    if not mean.empty:
        ax.plot(mean.index, mean.to_numpy(), "-o", color=STEER_COLOUR, markersize=3, label=label)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    if not best.empty:
        ax.plot(best["best_layer_fraction"], [0.0] * len(best), "x", color="black", label="swept best layer")
    if not predicted.empty:
        ax.plot(
            predicted["predicted_fraction"],
            [0.0] * len(predicted),
            "^",
            color=OKABE_ITO["blue"],
            fillstyle="none",
            label="predicted layer",
        )
    floor_scale(ax)
    ax.set_ylabel("Glass's delta")


def _of(table: pd.DataFrame, model: str) -> pd.DataFrame:
    return table[table["model"] == model] if not table.empty else table


def depth_panel(
    decodability: pd.DataFrame,
    deltas: pd.DataFrame,
    best: pd.DataFrame,
    predicted: pd.DataFrame,
    models: Sequence[str],
    stem: Path,
) -> list[Path]:
    """The figure (module docstring) for ``models``; ``deltas`` from ``glass_deltas``,
    ``best`` from ``best_layers``, ``predicted`` from ``layer_predictor.compare``."""
    fig, axes = _grid(2, len(models), 3.6, 2.4, sharex=True)
    for col, model in enumerate(models):
        top, bottom = axes[0][col], axes[1][col]
        frame = decodability[decodability["model"] == model]
        _readable(top, frame)
        n_concepts = frame["dataset"].nunique()
        top.set_title(f"{model}\n({n_concepts} concept{'s' if n_concepts != 1 else ''})", fontsize=9)
        _steering(bottom, *(_of(table, model) for table in (deltas, best, predicted)))
        bottom.set_xlabel("depth (layer output / layers)")
        bottom.set_xlim(0.0, 1.0)
        if col:
            top.set_ylabel("")
            bottom.set_ylabel("")
    lows, highs = zip(*(axes[1][col].get_ylim() for col in range(len(models))), strict=True)
    for col in range(len(models)):  # one steering scale for every model: panels compare
        axes[1][col].set_ylim(min(lows), max(highs))
    handles, labels = [], []
    for ax in (axes[0][0], axes[1][0]):
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    fig.legend(handles, labels, loc="outside lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    finish(fig, "Where the concept is readable, and where it steers", models)
    return _save(fig, stem)


def methods_by_delta(best: pd.DataFrame, models: Sequence[str], stem: Path) -> list[Path]:
    """Glass's delta of each extraction method at its own best layer (strongest positive
    strength, residual units), one point per concept with its 95 % interval; one panel per model."""
    from remote_steer.analysis.summaries import METHODS
    from remote_steer.report.plots import CYCLE

    fig, axes = _grid(1, len(models), max(3.2, 0.9 * len(METHODS)), 2.8, sharey=True)
    datasets = sorted(best["dataset"].unique())
    offsets = {d: (i - (len(datasets) - 1) / 2) * 0.08 for i, d in enumerate(datasets)}
    for col, model in enumerate(models):
        ax = axes[0][col]
        cell = best[best["model"] == model]
        for i, method in enumerate(METHODS):
            for _, row in cell[cell["method"] == method].iterrows():
                x = i + offsets[row["dataset"]]
                colour = CYCLE[datasets.index(row["dataset"]) % len(CYCLE)]
                err = [[row["glass_delta"] - row["ci_low"]], [row["ci_high"] - row["glass_delta"]]]
                ax.errorbar([x], [row["glass_delta"]], yerr=err, fmt="o", color=colour, markersize=4, capsize=2)
            mean = cell[cell["method"] == method]["glass_delta"].mean()
            ax.plot([i - 0.3, i + 0.3], [mean, mean], color="black", linewidth=1.2)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(METHODS)), [m.replace("_", " ") for m in METHODS])
        strength = float(cell["strength"].max()) if not cell.empty else float("nan")
        ax.set_title(f"{model}\n(at {strength:+g} × residual norm)", fontsize=9)
        floor_scale(ax)
        if col == 0:
            ax.set_ylabel("Glass's delta at own best layer")
    handles = [plt_line(CYCLE[i % len(CYCLE)], d) for i, d in enumerate(datasets)] + [
        plt_line("black", "mean over concepts", marker="")
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
    finish(fig, "Which direction steers best: extraction methods on the same held-out items", models)
    return _save(fig, stem)


def plt_line(colour: str, label: str, marker: str = "o"):
    from matplotlib.lines import Line2D

    return Line2D([], [], color=colour, marker=marker, linestyle="-" if not marker else "", label=label)


def side_effects_matrix(frame: pd.DataFrame, models: Sequence[str], stem: Path) -> list[Path]:
    """Concept X's vector (rows) on concept Y's held-out items (columns): Glass's delta,
    a diverging scale centred on 0 (at least ±0.5), * where the 95 % interval excludes 0."""
    import numpy as np
    from matplotlib.patches import Rectangle

    concepts = list(dict.fromkeys(frame["vector"]))
    size = 0.55 * len(concepts) + 1.5
    fig, axes = _grid(1, len(models), size, size * 0.8)
    limit = max(0.5, float(np.nanmax(np.abs(frame["glass_delta"].to_numpy()))) if len(frame) else 0.5)
    image = None
    for col, model in enumerate(models):
        ax = axes[0][col]
        cell = frame[frame["model"] == model]
        grid = cell.pivot(index="vector", columns="dataset", values="glass_delta").reindex(
            index=concepts, columns=concepts
        )
        image = ax.imshow(grid.to_numpy(dtype=float), cmap="RdBu", vmin=-limit, vmax=limit)
        for _, row in cell.iterrows():
            i, j = concepts.index(row["vector"]), concepts.index(row["dataset"])
            star = "*" if row["ci_low"] > 0 or row["ci_high"] < 0 else ""
            ink = "white" if abs(row["glass_delta"]) > 0.6 * limit else "black"
            ax.text(j, i, f"{row['glass_delta']:+.2f}{star}", ha="center", va="center", fontsize=7, color=ink)
            if i == j:  # the diagonal: a vector on its own concept
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.2))
        ax.set_xticks(range(len(concepts)), concepts, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(concepts)), concepts if col == 0 else [], fontsize=7)
        ax.set_xlabel("items of concept")
        if col == 0:
            ax.set_ylabel("vector (at its own best layer)")
        strength = float(cell["strength"].max()) if not cell.empty else float("nan")
        ax.set_title(f"{model}\n(strength {strength:+g})", fontsize=9)
    if image is not None:
        label = "Glass's delta (*: 95% CI excludes 0; boxed: own concept)"
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=label)
    finish(fig, "Side effects: each concept's vector on every concept's held-out items", models)
    return _save(fig, stem)
