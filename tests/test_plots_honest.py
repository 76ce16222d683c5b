"""Figures that do not mislead: checked on the matplotlib objects, not by eye."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from remote_steer.report import plots


@pytest.fixture
def captured(monkeypatch):
    figures = []

    def keep(fig, stem):
        figures.append(fig)
        return []

    monkeypatch.setattr(plots, "_save", keep)
    from remote_steer.report import rigour_plots  # imported _save by name

    monkeypatch.setattr(rigour_plots, "_save", keep)
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
            dict(model="toy/qwen3", dataset="c", layer=n, layer_fraction=n / 4, strength=s, glass_delta=0.001 * s)
            for n in (1, 2)
            for s in (-1.0, 1.0)
        ]
    )
    rates = pd.DataFrame(
        [
            dict(model="toy/qwen3", dataset="c", layer=n, layer_fraction=n / 4, strength=s, behavior_change=np.nan)
            for n in (1, 2)
            for s in (-1.0, 1.0)
        ]
    )
    plots.generation_vs_logit_layers(deltas, rates, ["toy/qwen3"], ["c"], None)
    fig = captured[0]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["logit-diff Glass's delta, strength -1", "logit-diff Glass's delta, strength +1"]
    assert any("no valid generated answer" in t for t in _texts(fig))


def _controls_frames(ci_low: float):
    """One toy cell, two layers, ±1: the real delta 0.004 beyond controls of ±0.001 (so a
    p of 1/5), its interval [ci_low, 0.02] at layer 1 and clear of 0 at layer 2."""
    comparison, pool, real = [], [], []
    for layer in (1, 2):
        for strength in (-1.0, 1.0):
            value = 0.004 * strength
            key = dict(model="toy/qwen3", dataset="c", layer=layer, strength=strength)
            comparison.append(
                dict(
                    key,
                    layer_fraction=layer / 4,
                    glass_delta=value,
                    n_controls=4,
                    control_min=-0.001,
                    control_max=0.001,
                    p_value=0.2,
                    within=False,
                )
            )
            for kind in ("random", "shuffled"):
                for vector in (0, 1):
                    pool.append(dict(key, kind=kind, vector=vector, layer_fraction=layer / 4, glass_delta=0.0005))
            low, high = (ci_low, 0.02) if layer == 1 else (0.002, 0.006)
            real.append(
                dict(key, ci_low=low * strength, ci_high=high * strength)
                if strength > 0
                else dict(key, ci_low=-high, ci_high=-low)
            )
    return pd.DataFrame(comparison), pd.DataFrame(pool), pd.DataFrame(real)


def test_controls_figure_does_not_autoscale_noise_or_star_intervals_through_zero(captured):
    from remote_steer.report import rigour_plots

    comparison, pool, real = _controls_frames(ci_low=-0.01)
    rigour_plots.controls_by_depth(comparison, pool, ["toy/qwen3"], ["c"], None, real=real)
    fig = captured[0]
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert low <= -plots.MIN_DELTA_RANGE / 2 and high >= plots.MIN_DELTA_RANGE / 2  # noise stays flat
    stars = [c for c in ax.collections if c.get_gid() == "beyond_controls"]
    starred = sorted(float(x) for c in stars for x, _ in c.get_offsets())
    assert starred == [0.5, 0.5]  # layer 2 (depth 0.5) at + and −: beyond the controls, CI clear of 0
    hatched = [c for c in ax.collections if c.get_hatch()]
    assert len(hatched) == 2  # layer 1's interval through 0, at each sign
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("1/5 = 0.2 with 4 controls" in label for label in labels)
    assert plots.TOY_CAVEAT in _texts(fig) and fig._suptitle.get_text()


def test_validity_markers_are_not_joined_across_models(captured):
    validity = pd.DataFrame(
        [
            dict(model=m, strength=s, valid_rate=r)
            for m, r in (("Qwen3-4B", 0.9), ("Qwen3-8B", 0.5), ("Qwen3-14B", 0.7))
            for s in (-1.0, 0.0, 1.0)
        ]
    )
    plots.validity_by_size(validity, {"Qwen3-4B": 4.0, "Qwen3-8B": 8.2, "Qwen3-14B": 14.8}, None)
    ax = captured[0].axes[0]
    series = [line for line in ax.lines if line.get_marker() not in (None, "None", "")]  # not the slot edges
    assert len(series) == 3 and all(line.get_linestyle() == "None" for line in series)
