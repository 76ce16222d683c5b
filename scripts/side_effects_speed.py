"""The sweep and the side-effects matrix, side by side (docs/depth.md).

Usage: python scripts/side_effects_speed.py SPEC RUN_DIR [REPEATS]. RUN_DIR is a finished
local run of SPEC (its vectors, sweep rows and best layers). Alternates, REPEATS times on
one loaded model:

- ``sweep``: every concept's held-out items at every layer × strength, in the spec's
  chunks, no controls (the run's sweep alone);
- ``sweep+keep``: the same, keeping every prompt pass for the matrix (``HeldPrompts``);
- ``matrix``: the side-effects matrix from those kept passes (a run with
  ``side_effects = true``);
- ``matrix-again``: the matrix as a pass of its own, every prompt run again (a finished
  run, ``scripts/side_effects.py``);

and prints medians of process CPU time (single-threaded torch: the work itself, robust to
a loaded box) and wall-clock, the ratios to the sweep beside the ratio of steered rows,
the memory the kept passes took, and the load.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from remote_steer.engines.batching import chunks
from remote_steer.engines.sweep_fast import FastLogitDiffEngine, HeldPrompts
from remote_steer.models.loading import load_model
from remote_steer.remote.backend import Backend
from remote_steer.run import rigour
from remote_steer.run.runner import chunk_size, prepare
from remote_steer.run.side_effects import cells_of, extra_rows, target_rows, vectors_of
from remote_steer.run.spec import load_spec
from remote_steer.run.sweep_stage import LOGIT_TABLE
from remote_steer.rundir import RunDir


def main() -> None:  # noqa: PLR0915 - a benchmark's one flow, top to bottom
    spec, run_dir = load_spec(Path(sys.argv[1])), Path(sys.argv[2])
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    plan, store = prepare(spec), RunDir(run_dir)
    prepared = plan.models[0]
    name, unit, configs = prepared.spec.label, spec.evaluation.strength_unit, rigour.configs_for(spec, prepared)
    model = load_model(prepared.source, dtype=prepared.spec.dtype, device=prepared.spec.device)
    ev = spec.evaluation
    concepts = list(plan.splits)
    stacked = vectors_of(store, name, concepts, unit)
    vectors = dict(zip(concepts, stacked, strict=True))
    logit = store.table(LOGIT_TABLE)
    assert logit is not None, f"{run_dir}: no sweep saved"
    logit = logit[logit["model"] == name]
    cells = cells_of(logit, concepts, max(spec.strengths_for(prepared.spec)))
    tests = {c: prepared.encoded[c][1] for c in concepts}
    kept: dict[str, HeldPrompts] = {}

    def engine(hold=None) -> FastLogitDiffEngine:
        return FastLogitDiffEngine(model, Backend(), ev.batch_size, ev.positions, hold=hold)

    def sweep(keep: bool) -> None:
        kept.clear()
        for concept, test in tests.items():
            hold = HeldPrompts(frozenset(prepared.sweep_layers)) if keep else None
            run = engine(hold)
            for chunk in chunks(test, chunk_size(spec, test, len(configs))):
                run.run(chunk, vectors[concept], configs)
            if hold is not None:
                kept[concept] = hold

    def matrix(held: bool) -> None:
        for target, test in tests.items():
            run = engine(kept[target] if held else None)
            target_rows(run, test, stacked, cells, concepts, target, logit, seed=spec.seed, held=held)

    work = {
        "sweep": lambda: sweep(False),
        "sweep+keep": lambda: sweep(True),
        "matrix": lambda: matrix(True),
        "matrix-again": lambda: matrix(False),
    }

    def once(job) -> tuple[float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        job()
        return time.process_time() - cpu, time.perf_counter() - started

    torch.set_num_threads(1)
    for job in work.values():  # warm-up (the order matters: the matrix needs the kept passes)
        job()
    times: dict[str, list[tuple[float, float]]] = {key: [] for key in work}
    for _ in range(repeats):
        for key, job in work.items():
            times[key].append(once(job))
    items = sum(len(t) for t in tests.values())
    sweep_rows, added = items * len(configs), sum(extra_rows(len(tests), len(t)) for t in tests.values())
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    held_mib = sum(h.nbytes for h in kept.values()) / 2**20
    print(f"{name}: {items} held-out items, sweep {sweep_rows:,} steered rows, matrix adds {added:,}")
    print(f"  rows ratio {added / sweep_rows:.3f}; kept prompt passes: {held_mib:.0f} MiB")
    for k, what in ((0, "CPU"), (1, "wall")):
        base = statistics.median(t[k] for t in times["sweep"])
        print(f"  {what} (medians of {repeats}; ratio to the sweep):")
        for key in work:
            value = statistics.median(t[k] for t in times[key])
            runs = ", ".join(f"{t[k]:.2f}" for t in times[key])
            print(f"    {key:<13} {value:7.2f} s  {value / base:6.3f}   ({runs})")
    print(f"  load average {' '.join(load)}")


if __name__ == "__main__":
    main()
