"""The side-effects matrix of a finished run (docs/depth.md).

Usage: python scripts/side_effects.py SPEC RUN_DIR [OUT_DIR]. Writes
RUN_DIR/results/side_effects.parquet, OUT_DIR/side_effects.png|svg and
OUT_DIR/specificity.csv (default OUT_DIR: RUN_DIR/report).
"""

from __future__ import annotations

import sys
from pathlib import Path

from remote_steer.report.depth_plots import side_effects_matrix
from remote_steer.run.runner import prepare
from remote_steer.run.side_effects import side_effects, specificity
from remote_steer.run.spec import load_spec


def main() -> None:
    spec, run_dir = load_spec(Path(sys.argv[1])), Path(sys.argv[2])
    out = Path(sys.argv[3]) if len(sys.argv) > 3 else run_dir / "report"
    frame = side_effects(prepare(spec), run_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = specificity(frame)
    table.to_csv(out / "specificity.csv", index=False)
    print(table.round(3).to_string(index=False))
    side_effects_matrix(frame, list(dict.fromkeys(frame["model"])), out / "side_effects")


if __name__ == "__main__":
    main()
