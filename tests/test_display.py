"""Terminal output that reads anywhere: at 80 columns and piped, no table cell breaks
inside a word (tables switch to a compact, split or stacked layout instead)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from remote_steer.cli import app
from remote_steer.display import RichDisplay, fit_table

runner = CliRunner()


def _words_whole(output: str, cells) -> None:
    lines = output.splitlines()
    assert max(len(line) for line in lines) <= 80 or True  # width is checked by the caller
    for cell in cells:
        for word in str(cell).split():
            assert any(word in line for line in lines), f"{word!r} is broken across lines:\n{output}"


def _console(width: int = 80) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(width=width, file=buffer, force_terminal=False, color_system=None), buffer


@pytest.mark.parametrize(
    "args, must_contain",
    [
        (["models"], ["Qwen3-235B-A22B", "random (toy)", "distilled", "Llama-3.3-70B-Instruct"]),
        (["datasets"], ["coordinate-other-versions", "advanced-ai-risk/human_generated_evals/survival-instinct.jsonl"]),
        (["plan", "experiments/qwen3_family.toml"], ["Qwen3-235B-A22B", "Qwen3-30B-A3B", "forward passes"]),
    ],
)
@pytest.mark.parametrize("columns", [80, 100])
def test_cli_tables_fit_without_breaking_words(args, must_contain, columns):
    result = runner.invoke(app, args, env={"COLUMNS": str(columns)})  # CliRunner output is not a TTY
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= columns, result.output
    _words_whole(result.output, must_contain)


def test_fit_table_checks_every_cell_of_a_wide_table():
    rows = [
        (
            f"toy/qwen3-moe-{i}",
            "survival-instinct",
            "https://api.ndif.us",
            12,
            "0.123",
            "900+900 (est.)",
            "embedded (random-weight toy)",
            "coordinate-other-versions",
            1860,
            "132 MB",
            "10 MB",
        )
        for i in range(3)
    ]
    columns = [
        "model",
        "dataset",
        "host",
        "layers",
        "delta",
        "items",
        "weights",
        "concept",
        "forward passes",
        "sent ≈",
        "received ≈",
    ]
    for width in (80, 60, 40):
        console, buffer = _console(width)
        for renderable in fit_table("A wide table", columns, rows, "caption words stay whole too", width):
            console.print(renderable)
        output = buffer.getvalue()
        assert max(len(line.rstrip()) for line in output.splitlines()) <= width, output
        _words_whole(output, [c for row in rows for c in row] + columns)


def test_closing_table_fits_80_columns():
    from remote_steer.run.runner import _show_summary

    summary = pd.DataFrame(
        [
            dict(
                model=m,
                dataset=d,
                best_layer=7,
                best_layer_fraction=0.583,
                glass_delta_pos=0.0123,
                glass_delta_neg=-0.0101,
                n_items=20,
                pos_strength=1.0,
                neg_strength=-1.0,
            )
            for m in ("toy/qwen3", "toy/qwen3-moe", "Qwen3-235B-A22B")
            for d in ("corrigibility", "coordinate-other-versions")
        ]
    )
    plan = SimpleNamespace(
        models=[SimpleNamespace(spec=SimpleNamespace(name="toy/qwen3"), source=SimpleNamespace(is_toy=True))]
    )
    console, buffer = _console(80)
    _show_summary(RichDisplay(console), summary, plan)
    output = buffer.getvalue()
    assert max(len(line.rstrip()) for line in output.splitlines()) <= 80, output
    _words_whole(output, list(summary["model"]) + list(summary["dataset"]) + ["random-weight", "toys;"])


def test_progress_shows_overall_position_at_80_columns():
    console, buffer = _console(80)
    display = RichDisplay(console)
    display.plan_steps(["toy/qwen3 · corrigibility · extract", "toy/qwen3 · corrigibility · sweep"])
    with display.progress("toy/qwen3 · corrigibility · sweep", 340, "rows") as task:
        task.advance(340)
    output = buffer.getvalue()
    assert "toy/qwen3 · corrigibility" in output and "[2/2] sweep" in output and "340/340" in output
    assert max(len(line.rstrip()) for line in output.splitlines()) <= 80, output
