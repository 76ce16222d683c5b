"""A predicted-window run beside the full sweep of the same spec (docs/depth.md, "Layer predictor").

Usage: python scripts/predicted_window_check.py FULL_RUN_DIR PREDICTED_RUN_DIR

FULL_RUN_DIR swept every layer (``layer_window = "all"``), PREDICTED_RUN_DIR the same
spec with ``layer_window = "predicted"``. Prints, per model, one row per concept (the
window's layers, configurations swept, the full sweep's best layer, whether the window
holds it, Glass's delta at each run's best layer at the strongest positive strength)
and a summary line: configurations saved, hit rate beside a same-size random window's,
and the mean Glass's delta at the window's best against the full sweep's best.
"""

from __future__ import annotations

import sys
import textwrap

import pandas as pd

from remote_steer.analysis.layer_predictor import window_check, window_check_summary
from remote_steer.api import RunNotFound, open_run


def _layers(layers: list[int]) -> str:
    return ",".join(map(str, layers))


def report(cells: pd.DataFrame) -> str:
    """The per-concept rows and per-model summary lines, at 80 columns."""
    lines = []
    summaries = {row["model"]: row for row in window_check_summary(cells).to_dict("records")}
    for model, group in cells.groupby("model", sort=False):
        table = pd.DataFrame(
            {
                "concept": group["dataset"],
                "window": group["window_layers"].map(_layers),
                "configs": group["configurations"].astype(str) + "/" + group["full_configurations"].astype(str),
                "best": group["full_best_layer"],
                "hit": group["hit"].map({True: "yes", False: "no"}),
                "Δ window": group["window_delta"].map("{:+.3f}".format),
                "Δ full": group["full_delta"].map("{:+.3f}".format),
            }
        )
        s = summaries[model]
        lines += [model, table.to_string(index=False)]
        summary = (
            f"{s['concepts']} concepts: {s['configurations']} of {s['full_configurations']} configurations "
            f"swept ({s['saved']:.0%} saved); window holds the full best in {s['hits']} of {s['concepts']} "
            f"({s['hit_rate']:.0%}; same-size random window {s['chance_hit_rate']:.0%}); mean Glass's delta "
            f"{s['window_delta']:+.3f} at the window's best, {s['full_delta']:+.3f} at the full best"
        )
        lines += [textwrap.fill(summary, 80, initial_indent="  ", subsequent_indent="  "), ""]
    note = (
        "window: the layers the predicted run swept; configs: layer × strength configurations "
        "(predicted / full); best: the full sweep's best layer; Δ: Glass's delta at each run's "
        "best layer, strongest positive strength."
    )
    lines.append(textwrap.fill(note, 80))
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        sys.exit(2)
    try:
        full, windowed = open_run(sys.argv[1]), open_run(sys.argv[2])
    except RunNotFound as error:
        print(error, file=sys.stderr)
        sys.exit(2)
    cells = window_check(full.results, full.summary, windowed.results, windowed.summary)
    if cells.empty:
        print(f"{sys.argv[1]} and {sys.argv[2]}: no model × concept swept in both", file=sys.stderr)
        sys.exit(2)
    print(report(cells))


if __name__ == "__main__":
    main()
