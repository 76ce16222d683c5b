"""Directional ablation on a finished run (docs/depth.md).

Usage: python scripts/ablation.py SPEC RUN_DIR. Writes RUN_DIR/results/ablation.parquet
and prints the change in logit diff with each concept's direction ablated at every
layer, beside a random direction's.
"""

from __future__ import annotations

import sys
from pathlib import Path

from remote_steer.run.ablation_stage import ablation
from remote_steer.run.runner import prepare
from remote_steer.run.spec import load_spec


def main() -> None:
    spec, run_dir = load_spec(Path(sys.argv[1])), Path(sys.argv[2])
    frame = ablation(prepare(spec), run_dir)
    columns = ["model", "dataset", "direction_layer", "baseline_mean", "change", "change_ci_low", "change_ci_high"]
    columns += ["random_change", "random_change_ci_low", "random_change_ci_high"]
    print(frame[columns].round(3).to_string(index=False))


if __name__ == "__main__":
    main()
