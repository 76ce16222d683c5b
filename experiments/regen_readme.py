"""Regenerate the README's quickstart numbers from a real run: one command.

    python experiments/regen_readme.py            # toys already built (~/.cache/remote-steer)
    python experiments/regen_readme.py --cold     # empty model cache: the toy builds are timed too
    python experiments/regen_readme.py --fresh-clone   # the README's three commands in a fresh clone

Runs ``remote-steer run experiments/quickstart.toml`` into a temporary directory, exactly as a
user would (a subprocess, stdout piped, 80 columns), then ``remote-steer report`` on it, and
writes what they printed and drew into the repository:

* README.md, between ``<!-- regen:closing-table -->`` and ``<!-- /regen:closing-table -->``: the
  closing tables as printed (from the best-layer table to the line before ``done in``);
* README.md, between ``<!-- regen:quickstart-timing -->`` and ``<!-- /regen:quickstart-timing -->``:
  the run's wall time with the machine's load average, core count and date;
* docs/quickstart-depth.png: the report's ``glass_delta_by_depth.png``, with the points it plots
  (model, dataset, depth, Glass's delta at the strongest positive strength) stored in the PNG's
  ``remote-steer:points`` text chunk.

With ``--fresh-clone`` it instead clones the repository (its committed HEAD) into a temporary
directory and times the README's three commands there as a new user runs them, with empty pip
and model caches: ``scripts/setup`` (and a second, idle run of it), the quickstart, then
``scripts/check`` (its first run installs the NDIF stack; ``--check-args`` passes pytest
arguments, e.g. a selection, and the README then names the command as run). It writes the times
and loads between ``<!-- regen:fresh-clone -->`` and ``<!-- /regen:fresh-clone -->``; the clone
and its caches are deleted afterwards.

``tests/test_readme_regen.py`` runs the same quickstart and fails when the README's block or the
figure's points differ from what the code prints now: rerun this script after changing anything
that moves them (the depth rule, the sweep's first layer, the tables' layout).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "experiments" / "quickstart.toml"
README = ROOT / "README.md"
FIGURE = ROOT / "docs" / "quickstart-depth.png"
COLUMNS = 80
CLOSING = ("<!-- regen:closing-table -->", "<!-- /regen:closing-table -->")
TIMING = ("<!-- regen:quickstart-timing -->", "<!-- /regen:quickstart-timing -->")
FRESH = ("<!-- regen:fresh-clone -->", "<!-- /regen:fresh-clone -->")
QUICKSTART = [".venv/bin/remote-steer", "run", "experiments/quickstart.toml"]
POINTS_KEY = "remote-steer:points"
FIRST_LINE = "Best steering layer per model"


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "remote_steer.cli", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)


def _env(cache: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, COLUMNS=str(COLUMNS), PYTHONPATH=str(ROOT), NO_COLOR="1")
    env.pop("FORCE_COLOR", None)
    if cache is not None:
        env["REMOTE_STEER_CACHE"] = str(cache)
    return env


def run_quickstart(out_dir: Path, cache: Path | None = None) -> tuple[Path, str, float]:
    """The quickstart into ``out_dir``: (run directory, stdout, wall seconds)."""
    start = time.perf_counter()
    done = _cli(["run", str(SPEC), "--output-dir", str(out_dir)], _env(cache))
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"quickstart failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return out_dir / "quickstart", done.stdout, wall


def closing_block(stdout: str) -> str:
    """The closing tables as printed: from the best-layer table's title to the line before
    ``done in``, trailing spaces dropped (a terminal shows none)."""
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith(FIRST_LINE)), None)
    end = next((i for i, line in enumerate(lines) if line.startswith("done in")), None)
    if start is None or end is None:
        raise ValueError(f"no closing table in the quickstart's output:\n{stdout}")
    return "\n".join(line.rstrip() for line in lines[start:end]).strip("\n")


def depth_points(run_dir: Path) -> list[list]:
    """The points the depth figure plots: [model, dataset, depth, Glass's delta] at the
    strongest positive strength, computed from the run's tidy table."""
    import pandas as pd

    results = pd.read_parquet(run_dir / "results" / "logit_diff.parquet")
    strength = results.loc[results["strength"] > 0, "strength"].max()
    at = results[results["strength"] == strength]
    points = []
    for (model, dataset, fraction), cell in at.groupby(["model", "dataset", "layer_fraction"], sort=True):
        base = cell.drop_duplicates("item_id")["baseline_logit_diff"]
        delta = (cell["logit_diff"].mean() - base.mean()) / base.std(ddof=1)
        points.append([model, dataset, round(float(fraction), 6), round(float(delta), 6)])
    return points


def read_points(png: Path) -> list[list]:
    from PIL import Image

    with Image.open(png) as image:
        return json.loads(image.info[POINTS_KEY])  # PNG text chunks are in info


def _write_figure(report_png: Path, points: list[list]) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(POINTS_KEY, json.dumps(points))
    tmp = FIGURE.with_suffix(".tmp.png")
    with Image.open(report_png) as image:
        image.save(tmp, pnginfo=info, optimize=True)
    tmp.replace(FIGURE)


def replace_between(text: str, markers: tuple[str, str], body: str) -> str:
    begin, end = markers
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no {begin} … {end} block")
    return pattern.sub(lambda _: f"{begin}\n{body}\n{end}", text, count=1)


def readme_block(text: str, markers: tuple[str, str]) -> str:
    begin, end = markers
    inside = text.split(begin, 1)[1].split(end, 1)[0]
    return inside.strip("\n")


class Step(NamedTuple):
    wall: float
    load: tuple[float, float]  # 1-minute load average before, after
    output: str

    def load_span(self) -> str:
        return f"load {self.load[0]:.1f}–{self.load[1]:.1f}"


def _timed(command: list[str], cwd: Path, env: dict[str, str]) -> Step:
    """One command in the clone, as a user runs it: its wall time and the load around it."""
    print(f"regen: {shlex.join(command)} …", flush=True)
    before, start = os.getloadavg()[0], time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    step = Step(time.perf_counter() - start, (before, os.getloadavg()[0]), done.stdout)
    if done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-30:])
        raise SystemExit(f"{shlex.join(command)} failed (exit {done.returncode}) in the fresh clone:\n{tail}")
    print(f"regen:   {_duration(step.wall)}, {step.load_span()}", flush=True)
    return step


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def fresh_clone_steps(check_args: list[str]) -> tuple[Step, Step, Step, Step]:
    """scripts/setup twice, the quickstart and scripts/check in a fresh clone with empty caches."""
    with tempfile.TemporaryDirectory(prefix="regen-clone-") as tmp:
        clone = Path(tmp) / "remote-steer"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = dict(os.environ, PIP_CACHE_DIR=f"{tmp}/pip-cache", REMOTE_STEER_CACHE=f"{tmp}/model-cache")
        env.update(COLUMNS=str(COLUMNS), NO_COLOR="1")
        for name in ("PYTHONPATH", "VIRTUAL_ENV", "FORCE_COLOR"):
            env.pop(name, None)
        setup = _timed(["scripts/setup"], clone, env)
        again = _timed(["scripts/setup"], clone, env)
        quick = _timed(QUICKSTART, clone, env)
        check = _timed(["scripts/check", *check_args], clone, env)
        print(f"regen: deleting the clone and its caches ({tmp}) …", flush=True)
    return setup, again, quick, check


def fresh_clone_text(steps: tuple[Step, Step, Step, Step], check_args: list[str], day: str) -> str:
    """The README's paragraph for the three commands' times (one paragraph, unwrapped)."""
    setup, again, quick, check = steps
    ndif = re.search(r"ndif stack: installed \S+ in (\d+) s", check.output)
    tests = [line.strip("= ") for line in check.output.splitlines() if re.search(r"\d+ passed.* in ", line)]
    stack = f"the NDIF stack's install {_duration(float(ndif.group(1)))}" if ndif else "the NDIF stack already there"
    ran = f", then {tests[-1]}" if tests else ""
    return (
        f"Measured by `python experiments/regen_readme.py --fresh-clone` on {day}, from a fresh clone with "
        f"empty pip and model caches, on {os.cpu_count()} CPU cores: `scripts/setup` took "
        f"**{_duration(setup.wall)}** ({setup.load_span()}), and a second run {_duration(again.wall)}; the "
        f"quickstart **{_duration(quick.wall)}**, the toys built on first use ({quick.load_span()}); "
        f"`{shlex.join(['scripts/check', *check_args])}` **{_duration(check.wall)}** ({check.load_span()}): "
        f"{stack}{ran}."
    )


def _write_readme(blocks: dict[tuple[str, str], str]) -> None:
    """Replace the README's blocks (markers -> body) in one atomic write."""
    text = README.read_text()
    for markers, body in blocks.items():
        text = replace_between(text, markers, body)
    tmp_readme = README.with_suffix(".md.tmp")
    tmp_readme.write_text(text)
    tmp_readme.replace(README)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", action="store_true", help="time the run with an empty model cache (toy builds)")
    parser.add_argument("--fresh-clone", action="store_true", help="time the README's three commands in a clone")
    parser.add_argument("--check-args", default="", help="pytest arguments for scripts/check (--fresh-clone)")
    args = parser.parse_args()
    if args.fresh_clone:
        check_args = shlex.split(args.check_args)
        paragraph = fresh_clone_text(fresh_clone_steps(check_args), check_args, f"{datetime.now(UTC):%Y-%m-%d}")
        _write_readme({FRESH: "\n".join(textwrap.wrap(paragraph, 88))})
        print(f"README.md: the fresh clone's times rewritten\n{paragraph}")
        return
    with tempfile.TemporaryDirectory(prefix="regen-readme-") as tmp:
        tmp_path = Path(tmp)
        load_before = os.getloadavg()[0]
        run_dir, stdout, wall = run_quickstart(tmp_path / "outputs", tmp_path / "cache" if args.cold else None)
        load_after = os.getloadavg()[0]
        report = _cli(["report", str(run_dir)], _env())
        if report.returncode != 0:
            raise SystemExit(f"report failed (exit {report.returncode}):\n{report.stdout}\n{report.stderr}")
        _write_figure(run_dir / "report" / "figures" / "glass_delta_by_depth.png", depth_points(run_dir))
        block = closing_block(stdout)
    cores = os.cpu_count()
    cache = "an empty model cache, the two toy builds included" if args.cold else "the toys already built"
    timing = (
        f"Measured by `python experiments/regen_readme.py{' --cold' if args.cold else ''}` on "
        f"{datetime.now(UTC):%Y-%m-%d}: the quickstart took **{wall:.0f} s** wall time with {cache}, on "
        f"{cores} CPU cores at load average {load_before:.1f}–{load_after:.1f} (before–after)."
    )
    _write_readme({CLOSING: f"```\n{block}\n```", TIMING: "\n".join(textwrap.wrap(timing, 88))})
    print(f"README.md: closing table ({len(block.splitlines())} lines) and timing ({wall:.0f} s) rewritten")
    print(f"{FIGURE.relative_to(ROOT)}: redrawn from the run's report")
    print(block)


if __name__ == "__main__":
    main()
