"""Extraction pass with and without the decodability readout, side by side (docs/depth.md).

Usage: python scripts/depth_speed.py MODEL [REPEATS]. Alternates A (no readout) and B
(readout of the whole residual, and the decodability analysis) REPEATS times on the
training items of every real-small concept and prints medians of wall-clock and of
process CPU time (single-threaded torch: the work itself, robust to a loaded box),
their ratios and the load.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from remote_steer.analysis.decodability import decodability_frame
from remote_steer.data.prompts import encode_items
from remote_steer.engines.sweep_fast import extract_caa_fast_readout
from remote_steer.models.loading import load_model, resolve
from remote_steer.remote.backend import Backend
from remote_steer.run.runner import prepare
from remote_steer.run.spec import load_spec


def main() -> None:
    name, repeats = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3
    spec = load_spec(Path("experiments/real-small.toml"))
    model = load_model(resolve(name), dtype="float32")
    plan = prepare(spec)
    items = {c: encode_items(model.tokenizer, s.train) for c, s in plan.splits.items()}

    def once(readout: bool) -> tuple[float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        for concept, train in items.items():
            basis = torch.empty(0) if readout else None
            _, _, got = extract_caa_fast_readout(
                model, train, concept=concept, batch_size=16, backend=Backend(), basis=basis
            )
            if got is not None:
                letters = [it.matching_letter for it in train]
                decodability_frame(got, letters, model=name, concept=concept, training="", seed=0)
        return time.perf_counter() - started, time.process_time() - cpu

    torch.set_num_threads(1)
    once(False)  # warm-up
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(repeats):
        for readout in (False, True):
            times[readout].append(once(readout))
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    for k, what in ((0, "wall"), (1, "CPU")):
        a = statistics.median(t[k] for t in times[False])
        b = statistics.median(t[k] for t in times[True])
        print(f"{name} {what}: without {a:.2f} s, with decodability {b:.2f} s", end="")
        print(f" (medians of {repeats}); ratio {b / a:.2f}")
        print("  without:", ", ".join(f"{t[k]:.2f}" for t in times[False]))
        print("  with:", ", ".join(f"{t[k]:.2f}" for t in times[True]))
    print(f"  load average {' '.join(load)}")


if __name__ == "__main__":
    main()
