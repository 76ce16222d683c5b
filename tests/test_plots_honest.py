"""Figures that do not mislead: checked on the matplotlib objects, not by eye."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from remote_steer.analysis import plots


@pytest.fixture
def captured(monkeypatch):
    figures = []

    def keep(fig, stem):
        figures.append(fig)
        return []

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def _texts(fig):
    """Every text in the figure, line breaks read as spaces (the toy banner wraps to the figure's width)."""
    return [t.get_text().replace("\n", " ") for t in fig.findobj(lambda o: hasattr(o, "get_text"))]


def test_heatmap_scale_has_a_minimum_range_and_hatches_cis_through_zero(captured):
    from matplotlib.patches import Rectangle

    best = pd.DataFrame(
        [
            dict(
                model="toy/qwen3",
                dataset="corrigibility",
                best_layer=4,
                pos_strength=1.0,
                glass_delta_pos=0.003,
                glass_delta_pos_ci_low=-0.01,
                glass_delta_pos_ci_high=0.02,
            ),
            dict(
                model="toy/qwen3",
                dataset="sycophancy",
                best_layer=5,
                pos_strength=1.0,
                glass_delta_pos=0.004,
                glass_delta_pos_ci_low=0.001,
                glass_delta_pos_ci_high=0.006,
            ),
        ]
    )
    plots.delta_heatmap(best, ["toy/qwen3"], ["corrigibility", "sycophancy"], None)
    fig = captured[0]
    image = fig.axes[0].images[0]
    assert image.get_clim() == (-plots.MIN_DELTA_RANGE, plots.MIN_DELTA_RANGE)
    hatched = [p for p in fig.axes[0].patches if isinstance(p, Rectangle) and p.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_xy() == (-0.5, -0.5)  # only the interval through 0
    assert plots.TOY_CAVEAT in _texts(fig)


def test_heatmap_scale_grows_with_large_effects_and_no_caveat_for_real_models(captured):
    best = pd.DataFrame(
        [
            dict(
                model="Qwen3-4B",
                dataset="corrigibility",
                best_layer=20,
                pos_strength=4.0,
                glass_delta_pos=1.7,
                glass_delta_pos_ci_low=1.2,
                glass_delta_pos_ci_high=2.1,
            )
        ]
    )
    plots.delta_heatmap(best, ["Qwen3-4B"], ["corrigibility"], None)
    assert captured[0].axes[0].images[0].get_clim() == (-1.7, 1.7)
    assert plots.TOY_CAVEAT not in _texts(captured[0])


def test_depth_plot_one_colour_and_band_per_model_in_every_panel(captured):
    rows = []
    for model in ("Qwen3-4B", "Qwen3-8B"):  # the same training method: must still differ in colour
        for dataset in ("corrigibility", "sycophancy"):
            for layer in range(3):
                rows.append(
                    dict(
                        model=model,
                        dataset=dataset,
                        layer=layer,
                        layer_fraction=layer / 3,
                        strength=1.0,
                        glass_delta=0.1 * layer,
                        ci_low=0.1 * layer - 0.05,
                        ci_high=0.1 * layer + 0.05,
                    )
                )
    deltas = pd.DataFrame(rows)
    training = {"Qwen3-4B": "distilled", "Qwen3-8B": "distilled"}
    plots.delta_by_depth(deltas, training, ["Qwen3-4B", "Qwen3-8B"], ["corrigibility", "sycophancy"], None)
    axes = [ax for ax in captured[0].axes if ax.get_visible()]
    assert len(axes) == 3  # mean + two datasets
    for ax in axes:
        colours = {line.get_color() for line in ax.lines if line.get_marker() not in (None, "None", "")}
        assert len(colours) == 2, ax.get_title()
        assert len(ax.collections) == 2, f"{ax.get_title()}: one band per model"


def test_generation_plot_notes_missing_answers_and_orders_strengths(captured):
    deltas = pd.DataFrame(
        [
            dict(model="toy/qwen3", dataset="c", layer=l, layer_fraction=l / 4, strength=s, glass_delta=0.001 * s)
            for l in (1, 2)
            for s in (-1.0, 1.0)
        ]
    )
    rates = pd.DataFrame(
        [
            dict(model="toy/qwen3", dataset="c", layer=l, layer_fraction=l / 4, strength=s, behavior_change=np.nan)
            for l in (1, 2)
            for s in (-1.0, 1.0)
        ]
    )
    plots.generation_vs_logit_layers(deltas, rates, ["toy/qwen3"], ["c"], None)
    fig = captured[0]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["logit-diff Glass's delta, strength -1", "logit-diff Glass's delta, strength +1"]
    assert any("no valid generated answer" in t for t in _texts(fig))
