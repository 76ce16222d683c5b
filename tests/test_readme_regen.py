"""The README's quickstart numbers are what the code prints: the quickstart runs as a user
runs it (a subprocess, piped, 80 columns) and its closing tables must match the README's
block, and the points stored in docs/quickstart-depth.png must match Glass's delta computed
here from the run's tidy table. On a failure: ``python experiments/regen_readme.py``.

Numbers are compared to the last digit they are printed with, plus one (float32 sums differ
in their last bits between CPUs); everything else must match exactly.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"[+-]?\d+\.\d+")


def _regen():
    spec = importlib.util.spec_from_file_location("regen_readme", ROOT / "experiments" / "regen_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


regen = _regen()


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    run_dir, stdout, _ = regen.run_quickstart(tmp_path_factory.mktemp("regen") / "outputs")
    return run_dir, stdout


def _same_up_to_last_digit(printed: str, expected: str) -> list[str]:
    """Differences between two blocks: text must be equal (whitespace runs aside), numbers
    within one unit of their last printed digit."""
    problems = []
    got_lines, want_lines = printed.splitlines(), expected.splitlines()
    if len(got_lines) != len(want_lines):
        return [f"{len(got_lines)} lines printed, the README has {len(want_lines)}"]
    for got, want in zip(got_lines, want_lines, strict=True):
        if NUMBER.sub("#", " ".join(got.split())) != NUMBER.sub("#", " ".join(want.split())):
            problems.append(f"printed: {got.strip()!r}\n README: {want.strip()!r}")
            continue
        for a, b in zip(NUMBER.findall(got), NUMBER.findall(want), strict=True):
            digits = len(b.split(".")[1])
            if abs(float(a) - float(b)) > 1.01 * 10**-digits:
                problems.append(f"{a} printed, {b} in the README: {got.strip()!r}")
    return problems


def test_readme_closing_table_is_what_the_quickstart_prints(quickstart):
    _, stdout = quickstart
    printed = regen.closing_block(stdout)
    block = regen.readme_block(regen.README.read_text(), regen.CLOSING)
    assert block.startswith("```\n") and block.endswith("\n```"), "the README's block is a code block"
    problems = _same_up_to_last_digit(printed, block[4:-4])
    assert not problems, "README closing table drifted; run python experiments/regen_readme.py\n" + "\n".join(problems)


def test_readme_figure_plots_what_the_quickstart_computes(quickstart):
    """The depth figure's points (stored in the PNG by the regeneration) against Glass's
    delta computed here from results/logit_diff.parquet, independently of the report."""
    import numpy as np
    import pandas as pd

    run_dir, _ = quickstart
    stored = pd.DataFrame(regen.read_points(regen.FIGURE), columns=["model", "dataset", "depth", "delta"])
    results = pd.read_parquet(run_dir / "results" / "logit_diff.parquet")
    at = results[results["strength"] == results["strength"].max()]
    rows = []
    for (model, dataset, depth), cell in at.groupby(["model", "dataset", "layer_fraction"]):
        base = cell["baseline_logit_diff"].to_numpy(dtype=np.float64)
        steered = cell["logit_diff"].to_numpy(dtype=np.float64)
        rows.append((model, dataset, round(depth, 6), (steered.mean() - base.mean()) / base.std(ddof=1)))
    fresh = pd.DataFrame(rows, columns=["model", "dataset", "depth", "delta"])
    merged = stored.merge(fresh, on=["model", "dataset", "depth"], how="outer", suffixes=("_png", "_run"))
    missing = merged[merged[["delta_png", "delta_run"]].isna().any(axis=1)]
    assert missing.empty, f"depths differ (figure vs run); run python experiments/regen_readme.py:\n{missing}"
    scale = max(1.0, float(merged["delta_run"].abs().max()))
    np.testing.assert_allclose(merged["delta_png"], merged["delta_run"], rtol=0, atol=1e-4 * scale)


def test_llama_cpp_flags_in_help_and_docs_are_llama_cpps():
    """``export --help``, the README and the reference spell the llama.cpp flags as llama.cpp
    does (common/arg.cpp): ``--control-vector FNAME``, ``--control-vector-scaled FNAME:SCALE``,
    ``--control-vector-layer-range START END``."""
    from typer.testing import CliRunner

    from remote_steer.cli import app

    result = CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    help_text = " ".join(result.output.split())
    readme = " ".join(regen.README.read_text().split())
    reference = " ".join((ROOT / "docs" / "reference.md").read_text().split())
    for text in (help_text, readme, reference):
        assert re.search(r"--control-vector-scaled \S+\.gguf:\S+", text), "FILE.gguf:SCALE, one argument"
        assert re.search(r"--control-vector-layer-range \S+ \S+", text)
        assert re.search(r"--control-vector \S+\.gguf", text)
    known = {"--control-vector", "--control-vector-scaled", "--control-vector-layer-range"}
    for text in (help_text, readme, reference):
        assert set(re.findall(r"--control-vector[a-z-]*", text)) <= known


def test_python_version_agrees():
    import tomllib

    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert required.startswith(">=")
    assert f"Python ≥ {required[2:]}" in regen.README.read_text()
