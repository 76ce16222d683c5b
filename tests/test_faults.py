"""Fault injection (issue 24): damaged files of every kind, runs killed with SIGKILL at
random points, and two runs of one spec at once. Each time the next command repairs
the damage or gives one line and exit 2, and the results end equal to a clean run's,
row for row.

The killed and concurrent runs are forked by tests/fault_harness.py, which imports
the libraries once (a fresh interpreter per run would spend most of the time importing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from remote_steer.cli import app
from remote_steer.display import NullDisplay
from remote_steer.run.runner import run_experiment
from remote_steer.run.spec import parse_spec
from remote_steer.rundir import PROVENANCE_COLUMNS, RunDir

HARNESS = Path(__file__).with_name("fault_harness.py")
KEY = ["model", "dataset", "item_id", "layer", "strength"]
runner = CliRunner()


def _harness(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HARNESS.parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(HARNESS), *args], capture_output=True, text=True, timeout=600, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEY).reset_index(drop=True)


def _tiny(out: Path):
    from fault_harness import TINY

    return parse_spec(TINY.format(out=out), "tiny.toml")


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    outcome = run_experiment(_tiny(out))
    return outcome.run_dir, _sorted(outcome.results)


@pytest.fixture
def copy(clean, tmp_path):
    """A copy of the clean run, to damage."""
    target = tmp_path / "tiny"
    shutil.copytree(clean[0], target)
    return RunDir(target)


def _one_line_exit_2(result, names: Path) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(names) in lines[0]
    return lines[0]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:10])


def _corrupt(path: Path, at: float = 0.97) -> None:
    """64 bytes overwritten ``at`` that fraction of the file (a part: its footer, 0.97)."""
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    data[start : start + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


def _corrupt_data(path: Path) -> None:
    _corrupt(path, 0.05)  # a part: its first data pages


def _run_again(run: RunDir):
    display = NullDisplay()
    return run_experiment(_tiny(run.root.parent), display=display), display.notes


@pytest.mark.parametrize("damage", [_truncate, _corrupt, _corrupt_data, "not parquet", "wrong columns"])
def test_damaged_part_is_set_aside_and_recomputed(copy, clean, damage):
    part = copy.part_path("logit_diff", "toy/qwen3", "corrigibility", 2)
    if damage == "not parquet":
        part.write_text("model,dataset\n")
    elif damage == "wrong columns":
        pd.DataFrame({"what": [1]}).to_parquet(part)
    else:
        damage(part)
    outcome, notes = _run_again(copy)
    assert outcome.computed_parts == 1 and outcome.skipped_parts == 4
    assert any(str(part) in n and "set aside" in n for n in notes), notes
    assert part.with_name(part.name + ".damaged").exists()
    pd.testing.assert_frame_equal(_sorted(outcome.results), clean[1])


@pytest.mark.parametrize("damage", [_truncate, _corrupt, _corrupt_data, "wrong columns"])
def test_damaged_decodability_part_is_set_aside_and_extracted_again(copy, clean, damage):
    """A decodability part (one per model × concept, no strength column) damaged: the next
    run sets it aside in one note and runs that concept's extraction again; the table and
    the vectors end equal to the clean run's, the sweep computes nothing."""
    part = copy.part_path("decodability", "toy/qwen3", "corrigibility", 0)
    vector = copy.vector_path("toy/qwen3", "corrigibility")
    clean_table, clean_vector = pd.read_parquet(clean[0] / "results" / "decodability.parquet"), vector.read_bytes()
    pd.DataFrame({"what": [1]}).to_parquet(part) if damage == "wrong columns" else damage(part)
    outcome, notes = _run_again(copy)
    assert outcome.computed_parts == 0
    assert sum(str(part) in n and "set aside" in n for n in notes) == 1, notes
    assert part.with_name(part.name + ".damaged").exists()
    table = pd.read_parquet(copy.results_path("decodability"))
    numbers = [c for c in clean_table.columns if c.endswith(("accuracy", "_mean", "agreement"))]
    assert numbers
    pd.testing.assert_frame_equal(table[numbers], clean_table[numbers], rtol=1e-5)
    assert vector.read_bytes() == clean_vector
    _, notes = _run_again(copy)  # repaired: nothing set aside or extracted again
    assert not any("set aside" in n for n in notes)


@pytest.mark.parametrize("damage", [_truncate, _corrupt])
def test_damaged_manifest_is_one_line_exit_2(copy, damage):
    damage(copy.manifest_path)
    spec_file = copy.root.parent / "tiny.toml"
    from fault_harness import TINY

    spec_file.write_text(TINY.format(out=copy.root.parent))
    before = sorted(p.name for p in copy.root.rglob("*"))
    line = _one_line_exit_2(runner.invoke(app, ["run", str(spec_file), "--quiet"]), copy.manifest_path)
    assert "--name" in line
    _one_line_exit_2(runner.invoke(app, ["report", str(copy.root), "--no-figures"]), copy.manifest_path)
    assert sorted(p.name for p in copy.root.rglob("*")) == before  # nothing written, no report/


@pytest.mark.parametrize("damage", [_truncate, _corrupt])
def test_damaged_vector_is_one_line_exit_2(copy, damage):
    vector = copy.vector_path("toy/qwen3", "corrigibility")
    damage(vector)
    from fault_harness import TINY

    spec_file = copy.root.parent / "tiny.toml"
    spec_file.write_text(TINY.format(out=copy.root.parent))
    line = _one_line_exit_2(runner.invoke(app, ["run", str(spec_file), "--quiet"]), vector)
    assert "delete it and rerun" in line
    vector.unlink()  # what the line says to do
    outcome, _ = _run_again(copy)
    pd.testing.assert_frame_equal(_sorted(outcome.results), _sorted(RunDir(copy.root).table("logit_diff")))


@pytest.mark.parametrize("damage", [_truncate, _corrupt, "missing"])
def test_damaged_results_table_is_rebuilt_by_report_and_run(copy, clean, damage):
    table = copy.results_path("logit_diff")
    table.unlink() if damage == "missing" else damage(table)
    result = runner.invoke(app, ["report", str(copy.root), "--no-figures"])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(_sorted(pd.read_parquet(table)), clean[1])
    damage(table) if damage != "missing" else table.unlink()
    outcome, _ = _run_again(copy)
    assert outcome.computed_parts == 0
    pd.testing.assert_frame_equal(_sorted(pd.read_parquet(table)), clean[1])


@pytest.mark.parametrize("damage", [_truncate, "missing"])
def test_damaged_decodability_table_is_rebuilt_by_report(copy, clean, damage):
    table = copy.results_path("decodability")
    expected = pd.read_parquet(table)
    table.unlink() if damage == "missing" else damage(table)
    result = runner.invoke(app, ["report", str(copy.root), "--no-figures"])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_parquet(table), expected)


@pytest.mark.parametrize("damage", [_truncate, _corrupt])
def test_damaged_ablation_table_is_written_again_by_the_next_run(tmp_path, damage):
    """results/ablation.parquet (``[evaluation] ablation = true``) is computed whole after
    every run's summary: damaged, the next run writes it again, equal; report ignores it."""
    from fault_harness import TINY

    text = TINY.format(out=tmp_path).replace("chunk_items = 1", "chunk_items = 1\nablation = true")
    outcome = run_experiment(parse_spec(text, "tiny.toml"))
    table = RunDir(outcome.run_dir).results_path("ablation")
    expected = pd.read_parquet(table)
    damage(table)
    result = runner.invoke(app, ["report", str(outcome.run_dir), "--no-figures"])
    assert result.exit_code == 0, result.output
    again = run_experiment(parse_spec(text, "tiny.toml"))
    assert again.computed_parts == 0
    numbers = ["baseline_mean", "ablated_mean", "random_ablated_mean", "change", "random_change"]
    pd.testing.assert_frame_equal(pd.read_parquet(table)[numbers], expected[numbers])


def test_report_on_a_non_run_directory_leaves_nothing(tmp_path):
    target = tmp_path / "not-a-run"
    target.mkdir()
    result = runner.invoke(app, ["report", str(target), "--no-figures"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert list(target.iterdir()) == []


def test_rows_carry_their_provenance(clean):
    results = clean[1]
    assert set(PROVENANCE_COLUMNS) <= set(results.columns)
    assert (results["backend"] == "local").all() and (results["host"] == "").all()
    assert (results["engine"] == "fast").all()
    assert json.loads(results["client"].iloc[0])["torch"]


def test_runs_killed_at_random_points_end_equal_to_a_clean_run(tmp_path):
    result = _harness("kills", "24", str(tmp_path))
    for run in [result["clean"], *result["runs"], result["last"]]:
        # every run that was not killed either finished or refused in one line
        assert run["killed"] or run["exit"] == 0 or (run["exit"] == 2 and "\n" not in run["line"]), run
    assert sum(r["killed"] for r in result["runs"]) >= 5, result["runs"]
    assert result["last"]["exit"] == 0
    clean = RunDir(tmp_path / "clean" / "tiny").table("logit_diff")
    killed = RunDir(tmp_path / "killed" / "tiny")
    pd.testing.assert_frame_equal(_sorted(killed.table("logit_diff")), _sorted(clean))
    assert not list(killed.root.rglob("*.tmp")) and not killed.lock_path.exists()


def test_two_runs_at_once_one_computes_the_other_refuses(tmp_path):
    runs = _harness("race", str(tmp_path))["runs"]
    assert sorted(r["exit"] for r in runs) == [0, 2], runs
    done, refused = sorted(runs, key=lambda r: r["exit"])
    assert done["computed"] == 5 and done["skipped"] == 0  # every chunk once, by one process
    assert "being written by process" in refused["line"] and "\n" not in refused["line"]


def test_report_during_a_run_reads_the_parts_and_says_so(copy, clean):
    """A live writer holds the lock: report reads the finished parts (a consistent
    snapshot: each part is a whole file), writes nothing into results/, and says so."""
    import socket

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = {"pid": sleeper.pid, "host": socket.gethostname(), "started": None, "command": "remote-steer run"}
        copy.lock_path.write_text(json.dumps(holder))
        copy.results_path("logit_diff").unlink()
        result = runner.invoke(app, ["report", str(copy.root), "--no-figures"])
        assert result.exit_code == 0, result.output
        assert not copy.results_path("logit_diff").exists()
        text = (copy.report_dir / "report.md").read_text()
        assert f"being written by process {sleeper.pid}" in text
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("damage", [_truncate, _corrupt])
@pytest.mark.parametrize("table", ["side_effects", "methods"])
def test_damaged_side_effects_or_methods_part_is_computed_again(tmp_path, damage, table):
    """A part of the side-effects matrix or of the methods (``side_effects``/``methods = true``)
    that is truncated or corrupt: the report leaves it out (or reads the whole ones) and the
    next run computes that part again, equal to the first run's, with its provenance."""
    from fault_harness import TINY

    two = 'concepts = ["corrigibility", "sycophancy"]'
    text = TINY.format(out=tmp_path).replace('concepts = ["corrigibility"]', two)
    text = text.replace("chunk_items = 1", "chunk_items = 5\nside_effects = true\nmethods = true")
    first = run_experiment(parse_spec(text, "tiny.toml"))
    store = RunDir(first.run_dir)
    expected = _sorted_table(store, table)
    part = store.part_files(table, "toy/qwen3", "sycophancy")[0]
    damage(part)
    result = runner.invoke(app, ["report", str(first.run_dir), "--no-figures"])
    assert result.exit_code == 0, result.output
    again = run_experiment(parse_spec(text, "tiny.toml"))
    assert again.computed_parts == 0  # the sweep is whole: only the damaged part is computed
    got = _sorted_table(store, table)
    assert set(got["backend"]) == {"local"}
    numbers = ["glass_delta", "ci_low", "ci_high"]
    pd.testing.assert_frame_equal(got[numbers], expected[numbers], check_exact=False, rtol=1e-4, atol=1e-6)


def _sorted_table(store: RunDir, table: str) -> pd.DataFrame:
    frame = pd.read_parquet(store.results_path(table))
    key = ["vector", "dataset"] if table == "side_effects" else ["dataset", "method", "layer", "strength"]
    return frame.sort_values(key).reset_index(drop=True)
