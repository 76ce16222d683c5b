"""Regenerate the README's quickstart numbers from a real run: one command.

    python experiments/regen_readme.py            # toys already built (~/.cache/remote-steer)
    python experiments/regen_readme.py --cold     # empty model cache: the toy builds are timed too

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

``tests/test_readme_regen.py`` runs the same quickstart and fails when the README's block or the
figure's points differ from what the code prints now: rerun this script after changing anything
that moves them (the depth rule, the sweep's first layer, the tables' layout).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "experiments" / "quickstart.toml"
README = ROOT / "README.md"
FIGURE = ROOT / "docs" / "quickstart-depth.png"
COLUMNS = 80
CLOSING = ("<!-- regen:closing-table -->", "<!-- /regen:closing-table -->")
TIMING = ("<!-- regen:quickstart-timing -->", "<!-- /regen:quickstart-timing -->")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", action="store_true", help="time the run with an empty model cache (toy builds)")
    args = parser.parse_args()
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
    text = README.read_text()
    text = replace_between(text, CLOSING, f"```\n{block}\n```")
    text = replace_between(text, TIMING, "\n".join(textwrap.wrap(timing, 88)))
    tmp_readme = README.with_suffix(".md.tmp")
    tmp_readme.write_text(text)
    tmp_readme.replace(README)
    print(f"README.md: closing table ({len(block.splitlines())} lines) and timing ({wall:.0f} s) rewritten")
    print(f"{FIGURE.relative_to(ROOT)}: redrawn from the run's report")
    print(block)


if __name__ == "__main__":
    main()
