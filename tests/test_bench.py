"""Smoke tests of the benchmark's plumbing (tiny toy, two items); the benchmark itself is not run here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from typer.testing import CliRunner

from remote_steer.bench.bench import BenchOptions, floor_work, markdown, run_bench, write_result
from remote_steer.cli import app

TINY = dict(items=2, layers=4, hidden=64, repeats=1, plain_items=1, batch_size=2, threads=1)


def _check(result, impls):
    assert set(result.summary) == set(impls)
    for impl in impls:
        s = result.summary[impl]
        assert s["total_s"] > 0 and s["peak_rss_mb"] > s["rss_loaded_mb"] * 0.5
        assert s["token_layers"] >= result.config["floor"]["total"] * (0.99 if impl in "ad" else 1.0)
    # same prompts, same numbers: the implementations agree, and the sweep moves something
    assert result.agreement["a: max |steered − baseline|"] > 1e-3
    for key, value in result.agreement.items():
        if key.endswith(("vectors", "logit diffs")):
            assert value < 1e-4, key


def test_bench_plumbing_runs_each_implementation_and_writes_results(tmp_path):
    options = BenchOptions(**TINY, skip_steering_vectors=True, output_dir=str(tmp_path))
    result = run_bench(options)
    _check(result, "acd")
    assert result.summary["a"]["token_layers"] == result.summary["d"]["token_layers"]  # the same work
    assert result.ratios["c/a"] is not None and result.ratios["a/d"] is not None and result.ratios["b/a"] is None
    assert any("(b) skipped" in note for note in result.notes)
    json_path, md_path = write_result(result, tmp_path)
    saved = json.loads(json_path.read_text())
    assert saved["config"]["floor"] == result.config["floor"]
    text = md_path.read_text()
    assert "| (a) remote-steer |" in text and "(c)/(a)" in text and "Agreement" in text
    assert markdown(result) == text


def test_floor_counts_prompt_once_and_window_above_each_layer():
    spec = {
        "positions": "assistant",
        "layers": [2, 3],
        "strengths": [-1.0, 1.0],
        "train": [{"ids": [1] * 10, "assistant_start": 3}],
        "test": [{"ids": [1] * 12, "assistant_start": 5}],
    }
    work = floor_work(spec, n_layers=4)
    assert work["extract"] == (10 + 2) * 4
    assert work["sweep"] == 12 * 4 + 2 * 7 * (4 - 1 - 2) + 2 * 7 * (4 - 1 - 3)
    assert floor_work({**spec, "positions": "all"}, 4)["sweep"] == 12 * 4 + 2 * 12 * 1


def test_cli_refuses_bad_positions():
    result = CliRunner().invoke(app, ["bench", "--positions", "middle"])
    assert result.exit_code == 2
    assert "--positions" in result.output


@pytest.mark.slow
def test_bench_with_steering_vectors_venv(tmp_path):
    """(b) in its own venv (``.bench-venv``, see the README); skipped where it is absent."""
    python = REPO_ROOT / ".bench-venv" / "bin" / "python"
    if not python.exists():
        pytest.skip(".bench-venv is absent")
    result = run_bench(BenchOptions(**TINY, sv_python=str(python), output_dir=str(tmp_path)))
    _check(result, "abcd")
    assert result.summary["b"]["tokenization_mismatches"] == 0
    assert result.ratios["b/a"] is not None
    assert Path(result.config["checkpoint"]).is_dir()


def test_steering_vectors_worker_does_not_shadow_the_library():
    """(b) runs ``bench/sv_worker.py`` as a script, so its folder is first on sys.path: a
    file named ``steering_vectors.py`` there would be imported instead of the library."""
    import remote_steer.bench.bench as bench

    folder = Path(bench.__file__).parent
    assert not (folder / "steering_vectors.py").exists()
    assert (folder / "sv_worker.py").is_file()
