"""Every report figure, for 1, 2 and 6 datasets × 1, 2 and 6 models, checked on the drawn
matplotlib objects: no two text boxes overlap (titles, tick labels, axis labels, legends,
colourbar labels, banners, annotations), no legend sits on a panel, panels are not squeezed,
and every figure has a title and, when toys are in it, the toy banner.

The results are synthetic tidy tables shaped like the run store's (``test_report``), written as
run directories and read back by ``build_report``; figures are drawn at a small dpi and never
written to disk.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from unittest import mock

import pytest
import test_report as TR

from remote_steer.report import plots, rigour_plots
from remote_steer.report.build import FIGURES, build_report
from remote_steer.report.rigour import FIGURES as RIGOUR_FIGURES

TOY, TOY_MOE = ("toy/qwen3", 12, "random (toy)"), ("toy/qwen3-moe", 12, "random (toy)")
MODEL_SETS = {
    1: [TOY],
    2: [("Qwen3-4B", 36, "distilled"), TOY_MOE],  # a real name beside a toy: the banner still shows
    6: TR.STUDY_MODELS,  # the longest names, no toy: no banner
    3: [  # the matched pair: three 28-character names on one base (a slanted-label, tall-label case)
        ("Qwen2.5-32B-Instruct", 64, "sft+rlhf"),
        ("QwQ-32B", 64, "rl"),
        ("DeepSeek-R1-Distill-Qwen-32B", 64, "distilled"),
    ],
}
GRID = [*itertools.product((1, 2, 6), (1, 2, 6)), (4, 3)]  # datasets × models
ALL_FIGURES = set(FIGURES) | set(RIGOUR_FIGURES)
DPI = 40  # extents scale with dpi; overlaps do not
MIN_PANEL_IN = (1.2, 0.8)  # width, height of every data panel, inches
MIN_PANEL_SHARE = 0.5  # of the figure's width, spanned by the panels together


@pytest.fixture(scope="module")
def study():
    """The 6 × 6 study once (every model set's models, thin: few items, few layers); each
    grid cell is a subset of it."""
    models = list(dict.fromkeys(m for ms in MODEL_SETS.values() for m in ms))
    with mock.patch.dict(TR.PLANTED_PEAK, {"random (toy)": 0.5, "sft+rlhf": 0.65}):
        logit, generation = TR.synthetic_study(
            models, TR.STUDY_DATASETS, n_items=6, layer_step=6, generation_every=2, seed=3
        )
    return logit, generation


def _text_boxes(fig, renderer):
    """(name, window extent) of every visible, non-empty text box, and the legends whole."""
    boxes = []

    def add(name, artist):
        if artist is None or not artist.get_visible():
            return
        if hasattr(artist, "get_text") and not artist.get_text().strip():
            return
        boxes.append((name, artist.get_window_extent(renderer)))

    if fig._suptitle is not None:
        add("suptitle", fig._suptitle)
    for i, text in enumerate(fig.texts):
        if text is fig._suptitle:
            continue
        add(f"figure text {i} {text.get_text()[:30]!r}", text)
    for i, legend in enumerate(fig.legends):
        add(f"figure legend {i}", legend)
    for a, ax in enumerate(fig.axes):
        if not ax.get_visible() or not ax.axison and not ax.texts:
            continue
        where = f"axes {a} ({ax.get_title()[:30]!r})"
        for title in (ax.title, ax._left_title, ax._right_title):
            add(f"{where} title", title)
        add(f"{where} x label", ax.xaxis.label)
        add(f"{where} y label", ax.yaxis.label)
        for axis in (ax.xaxis, ax.yaxis):
            if not axis.get_visible():
                continue
            for tick in axis._update_ticks():  # the ticks that are drawn: inside the view limits
                for label in (tick.label1, tick.label2):
                    add(f"{where} tick {label.get_text()!r}", label)
        for text in ax.texts:
            add(f"{where} text {text.get_text()[:30]!r}", text)
        if ax.get_legend() is not None:
            add(f"{where} legend", ax.get_legend())
    return boxes


def _overlap(a, b, slack: float = 0.5) -> bool:
    return (
        a.x0 + slack < b.x1 - slack
        and b.x0 + slack < a.x1 - slack
        and a.y0 + slack < b.y1 - slack
        and b.y0 + slack < a.y1 - slack
    )


def _data_axes(fig):
    """Visible panels with data (colourbars and twins' second spine excluded)."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison and not hasattr(ax, "_colorbar")]


def problems(fig, models) -> list[str]:
    fig.set_dpi(DPI)
    fig.draw_without_rendering()  # the layout engine runs; nothing is rasterised
    renderer = fig.canvas.get_renderer()
    found = []
    title = fig._suptitle.get_text() if fig._suptitle is not None else ""
    if not title.strip():
        found.append("no title")
    toys = any(str(m).startswith("toy/") for m in models)
    banner = any(t.get_text().startswith("random-weight toy models") for t in fig.texts)
    if banner != toys:
        found.append(f"toy banner {'missing' if toys else 'on a figure without toys'}")
    boxes = _text_boxes(fig, renderer)
    for (name_a, a), (name_b, b) in itertools.combinations(boxes, 2):
        if _overlap(a, b):
            found.append(f"overlap: {name_a} × {name_b}")
    panels = _data_axes(fig)
    for legend in fig.legends:
        extent = legend.get_window_extent(renderer)
        for ax in panels:
            if _overlap(extent, ax.get_window_extent(renderer)):
                found.append(f"figure legend on a panel ({ax.get_title()[:30]!r})")
    for ax in panels:
        box = ax.get_window_extent(renderer)
        width, height = box.width / DPI, box.height / DPI
        if width < MIN_PANEL_IN[0] or height < MIN_PANEL_IN[1]:
            found.append(f"squeezed panel {ax.get_title()[:30]!r}: {width:.2f} × {height:.2f} in")
    if panels:  # the panels (and their colourbars), not a legend, take most of the width
        extents = [ax.get_window_extent(renderer) for ax in fig.axes if ax.get_visible() and ax.axison]
        share = (max(e.x1 for e in extents) - min(e.x0 for e in extents)) / fig.bbox.width
        if share < MIN_PANEL_SHARE:
            found.append(f"panels span {share:.0%} of the figure's width")
    return found


@pytest.mark.parametrize(("n_datasets", "n_models"), GRID, ids=[f"{d}datasets-{m}models" for d, m in GRID])
def test_every_figure_renders_cleanly(study, tmp_path, monkeypatch, n_datasets, n_models):
    logit, generation = study
    models = [m[0] for m in MODEL_SETS[n_models]]
    datasets = TR.STUDY_DATASETS[:n_datasets]
    keep = logit["model"].isin(models) & logit["dataset"].isin(datasets)
    keep_gen = generation["model"].isin(models) & generation["dataset"].isin(datasets)
    run = TR.write_run(tmp_path, "grid", logit[keep], generation[keep_gen], rigour=True)
    found: dict[str, list[str]] = {}
    drawn: list[str] = []

    def check(fig, stem: Path):
        drawn.append(stem.name)
        found[stem.name] = problems(fig, models)
        plots.plt.close(fig)
        return [stem.with_suffix(".png"), stem.with_suffix(".svg")]

    monkeypatch.setattr(plots, "_save", check)
    monkeypatch.setattr(rigour_plots, "_save", check)
    build_report([run], n_boot=10)
    assert set(drawn) == ALL_FIGURES
    bad = {k: v for k, v in found.items() if v}
    assert not bad, "\n".join(f"{k}: {p}" for k, v in bad.items() for p in v)


def test_the_checks_see_what_the_issue_saw():
    """The faults the issue saw, built by hand: ticks run together ("0.500.75"), a squeezed
    panel beside a wide legend, a colourbar label over the title, no title and no banner on a
    toy figure. Each is reported."""
    fig, ax = plots.plt.subplots(figsize=(4.5, 3.0), layout="constrained")
    ax.plot([0.5, 0.75], [0, 1], label="toy/qwen3 · random (toy), long label")
    ax.set_xticks([0.5, 0.505], ["0.50", "0.75"])
    fig.legend(loc="outside right center", fontsize=11)
    found = problems(fig, ["toy/qwen3"])
    plots.plt.close(fig)
    assert "no title" in found and "toy banner missing" in found, found
    assert any(p.startswith("overlap:") and "tick '0.50'" in p and "tick '0.75'" in p for p in found), found
    assert any(p.startswith("squeezed panel") for p in found), found
    assert any(p.startswith("panels span") for p in found), found

    fig, ax = plots.plt.subplots(figsize=(4.5, 2.6), layout="constrained")  # the old heatmap, one cell
    image = ax.imshow([[0.5]], aspect="auto")
    fig.colorbar(image, ax=ax, shrink=0.9).set_label("Glass's delta at strength +1\n(scale at least ±0.5)")
    ax.set_title("Glass's delta at the best layer (95% bootstrap CI; L = layer)", fontsize=10)
    fig.suptitle("a title")
    found = problems(fig, ["Qwen3-4B"])
    plots.plt.close(fig)
    assert any(p.startswith("overlap:") and "title" in p and "y label" in p for p in found), found
