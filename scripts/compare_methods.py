"""Compare extraction methods on a finished run (docs/depth.md).

Usage: python scripts/compare_methods.py SPEC RUN_DIR [OUT_DIR]. Steers each method's
vectors (analysis/directions.py) on the run's held-out items at its sweep layers, writes
RUN_DIR/results/methods.parquet, the methods' vector files, and OUT_DIR/methods.png|svg
with OUT_DIR/methods_best.csv (default OUT_DIR: RUN_DIR/report).
"""

from __future__ import annotations

import sys
from pathlib import Path

from remote_steer.report.depth_plots import methods_by_delta
from remote_steer.run.methods_stage import at_best, compare_methods
from remote_steer.run.runner import prepare
from remote_steer.run.spec import load_spec


def main() -> None:
    spec, run_dir = load_spec(Path(sys.argv[1])), Path(sys.argv[2])
    out = Path(sys.argv[3]) if len(sys.argv) > 3 else run_dir / "report"
    frame = compare_methods(prepare(spec), run_dir, on_cell=lambda m, c: print(f"{m} · {c}: done", flush=True))
    best = at_best(frame)
    out.mkdir(parents=True, exist_ok=True)
    best.to_csv(out / "methods_best.csv", index=False)
    print(best.groupby(["model", "method"])[["glass_delta", "layer_fraction"]].mean().round(3).to_string())
    methods_by_delta(best, list(dict.fromkeys(best["model"])), out / "methods")


if __name__ == "__main__":
    main()
