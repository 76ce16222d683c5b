"""The sweep and the side-effects matrix, side by side (docs/depth.md).

Usage: python scripts/side_effects_speed.py SPEC RUN_DIR [REPEATS]. RUN_DIR is a finished
local run of SPEC (its vectors and best layers). Alternates A (the sweep alone: every
concept's held-out items at every layer × strength, in the spec's chunks, no controls) and
B (the side-effects matrix, ``run.side_effects``) REPEATS times on one loaded model and
prints medians of process CPU time (single-threaded torch: the work itself, robust to a
loaded box) and wall-clock, their ratio beside the ratio of steered rows, and the load.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from remote_steer.engines.batching import chunks
from remote_steer.engines.extraction import SteeringVectors
from remote_steer.engines.sweep_fast import FastLogitDiffEngine
from remote_steer.models.loading import load_model
from remote_steer.remote.backend import Backend
from remote_steer.run import rigour
from remote_steer.run.runner import chunk_size, prepare
from remote_steer.run.side_effects import extra_rows, model_matrix
from remote_steer.run.spec import load_spec
from remote_steer.rundir import RunDir


def main() -> None:
    spec, run_dir = load_spec(Path(sys.argv[1])), Path(sys.argv[2])
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    plan, store = prepare(spec), RunDir(run_dir)
    prepared = plan.models[0]
    name, unit, configs = prepared.spec.label, spec.evaluation.strength_unit, rigour.configs_for(spec, prepared)
    model = load_model(prepared.source, dtype=prepared.spec.dtype, device=prepared.spec.device)
    engine = FastLogitDiffEngine(model, Backend(), spec.evaluation.batch_size, spec.evaluation.positions)
    vectors = {c: SteeringVectors.load(store.vector_path(name, c)).scaled(unit) for c in plan.splits}
    summary = store.summary()
    tests = {c: prepared.encoded[c][1] for c in plan.splits}

    def sweep() -> None:
        for concept, test in tests.items():
            for chunk in chunks(test, chunk_size(spec, test, len(configs))):
                engine.run(chunk, vectors[concept], configs)

    def matrix() -> None:
        model_matrix(plan, prepared, store, summary, model=model)

    def once(work) -> tuple[float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        work()
        return time.process_time() - cpu, time.perf_counter() - started

    torch.set_num_threads(1)
    sweep(), matrix()  # warm-up
    times: dict[str, list[tuple[float, float]]] = {"sweep": [], "matrix": []}
    for _ in range(repeats):
        times["sweep"].append(once(sweep))
        times["matrix"].append(once(matrix))
    items = sum(len(t) for t in tests.values())
    sweep_rows, added = items * len(configs), sum(extra_rows(len(tests), len(t)) for t in tests.values())
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"{name}: {items} held-out items, sweep {sweep_rows:,} steered rows, matrix adds {added:,}")
    print(f"  rows ratio {added / sweep_rows:.3f} (with its diagonal and baseline rows: ", end="")
    print(f"{items * (len(tests) + 1) / (items * (len(configs) + 1)):.3f})")
    for k, what in ((0, "CPU"), (1, "wall")):
        a, b = (statistics.median(t[k] for t in times[key]) for key in ("sweep", "matrix"))
        print(f"  {what}: sweep {a:.2f} s, matrix {b:.2f} s (medians of {repeats}); ratio {b / a:.3f}")
        for key in ("sweep", "matrix"):
            print(f"    {key}:", ", ".join(f"{t[k]:.2f}" for t in times[key]))
    print(f"  load average {' '.join(load)}")


if __name__ == "__main__":
    main()
