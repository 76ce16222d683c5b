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


# -- the README's three commands are CI's (issue 28) ---------------------------------------


def _setup_block(text: str) -> list[str]:
    """The commands of the README's first code block under "Set-up", comments dropped."""
    section = text.split("## Set-up", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readmes_commands_and_nothing_else():
    """.ci/run is scripts/setup then scripts/check; the README's set-up block is exactly
    those two around the quickstart, the command the regeneration times."""
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    ci = [line for line in ci if line and not line.startswith("#")]
    assert ci == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', "scripts/setup", "scripts/check"]
    commands = _setup_block(regen.README.read_text())
    assert commands == ["scripts/setup", " ".join(regen.QUICKSTART), "scripts/check"]
    timed = regen.readme_block(regen.README.read_text(), regen.FRESH)
    for command in ("scripts/setup", "the quickstart", "scripts/check"):
        assert command in " ".join(timed.split()), f"the README's fresh-clone times leave out {command}"


def test_fresh_clone_paragraph_names_each_time_and_load():
    def step(wall: float, output: str = "") -> regen.Step:
        return regen.Step(wall, (1.0, 2.0), output)

    check = (
        "check: installing NDIF's server stack for the tests into .ndif-venv/ (first run only, 1.7 GB)\n"
        "ndif stack: installed /somewhere/.ndif-venv in 160 s (1.7G)\n"
        "============================== 2 passed in 0.67s ===============================\n"
    )
    steps = (step(99.2), step(1.46), step(24.0), step(200.7, check))
    text = regen.fresh_clone_text(steps, ["tests/test_layout.py"], "2026-12-07")
    assert "`scripts/setup` took **1 min 39 s** (load 1.0–2.0), and a second run 1.5 s;" in text
    assert "the quickstart **24 s**, the toys built on first use (load 1.0–2.0);" in text
    assert "`scripts/check tests/test_layout.py` **3 min 21 s** (load 1.0–2.0)" in text
    assert text.endswith("the NDIF stack's install 2 min 40 s, then 2 passed in 0.67s.")
    reused = regen.fresh_clone_text((*steps[:3], step(900.0, "555 passed, 11 skipped in 800.1s\n")), [], "x")
    assert "`scripts/check` **15 min 0 s** (load 1.0–2.0): the NDIF stack already there, then 555 passed" in reused


@pytest.mark.parametrize(("args", "code"), [(["--help"], 0), (["--bogus"], 2), (["--torch"], 2)])
def test_setup_help_and_bad_arguments(args, code):
    """scripts/setup --help says what it does; a bad argument is one line, exit 2, and
    nothing is touched (both exit before looking at .venv)."""
    import subprocess

    done = subprocess.run([str(ROOT / "scripts" / "setup"), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == code
    if code == 0:
        assert "--torch SPEC" in done.stdout and "REMOTE_STEER_TORCH" in done.stdout
        assert max(len(line) for line in done.stdout.splitlines()) <= 80
    else:
        assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1
