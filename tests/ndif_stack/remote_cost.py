"""What running remotely costs, side by side in one run: the quickstart locally and on the
real NDIF stack (ndif 0.1.2 on this machine, the CPU actor), same engine, alternating.

    python tests/ndif_stack/remote_cost.py [--repeats 3] [--engine fast] [--modes logit]
                                           [--dir STACK_DIR]   # a stack `stack.py up` started

Without ``--dir`` it brings a stack up and down itself. Prints, per implementation, the
median wall time of the whole CLI command (python start, model build or config read,
every stage, analysis, files), the remote/local ratio, jobs and bytes each way, and
where the remote run's time went, summed from its job journal: the server's own
execution of the traces (``meta.runtime``), the queue and dispatch around it (submission
to completion as the client saw it, less execution and the result download), client
serialization, submission uploads, status polls and the object-store download; the
rest is the client's own work (key probe, tokenization, analysis, writing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))

from ndif_stack import stack as real_stack  # noqa: E402 - the tests folder is not a package


def _run(spec: Path, out: Path, name: str, extra: list[str], env: dict[str, str]) -> float:
    command = [sys.executable, "-m", "remote_steer.cli", "run", str(spec), "--name", name, "--output-dir", str(out)]
    started = time.perf_counter()
    done = subprocess.run([*command, "--quiet", *extra], env=env, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def _traffic(run_dir: Path) -> dict[str, float]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    total: dict[str, float] = {}
    for stages in (manifest.get("traffic") or {}).values():
        for t in stages.values():
            for key, value in t.items():
                if isinstance(value, (int, float)):
                    total[key] = total.get(key, 0.0) + value
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engine", default="fast", choices=("fast", "plain"))
    parser.add_argument("--modes", default="logit", help="e.g. logit or logit,generation")
    parser.add_argument("--dir", type=Path, help="a running stack's directory (default: bring one up)")
    parser.add_argument("--spec", type=Path, default=REPO / "experiments" / "quickstart.toml")
    args = parser.parse_args(argv)

    stack = real_stack.Stack.load(args.dir) if args.dir else real_stack.up(log=lambda line: print(line, flush=True))
    out = Path(tempfile.mkdtemp(prefix="remote-cost-"))
    try:
        env = {**os.environ, **stack.client_env(), "PYTHONPATH": str(REPO)}
        common = ["--engine", args.engine, "--modes", args.modes]
        walls: dict[str, list[float]] = {"local": [], "remote": []}
        last_remote = None
        for r in range(args.repeats):
            order = ("local", "remote") if r % 2 == 0 else ("remote", "local")
            for kind in order:
                name = f"{kind}-{r}"
                extra = [*common, "--backend", kind] + (["--host", stack.host] if kind == "remote" else [])
                walls[kind].append(_run(args.spec, out, name, extra, env))
                print(f"repeat {r + 1}: {kind:<6} {walls[kind][-1]:6.1f} s", flush=True)
                if kind == "remote":
                    last_remote = out / name
        local, remote = statistics.median(walls["local"]), statistics.median(walls["remote"])
        load = os.getloadavg()[0]
        print(
            f"\nquickstart, engine {args.engine}, modes {args.modes}; {args.repeats} alternating repeats; "
            f"load average {load:.1f} at the end"
        )
        print(f"local  median {local:6.1f} s  ({', '.join(f'{w:.1f}' for w in walls['local'])})")
        print(f"remote median {remote:6.1f} s  ({', '.join(f'{w:.1f}' for w in walls['remote'])})")
        print(f"remote / local: {remote / local:.2f}x")
        assert last_remote is not None
        t = _traffic(last_remote)
        in_flight = t.get("server_seconds", 0.0)
        runtime = t.get("server_runtime_s", 0.0)
        download = t.get("download_s", 0.0)
        queued = max(0.0, in_flight - runtime - download)
        rows = [
            ("jobs", f"{int(t.get('requests', 0))}"),
            ("bytes sent / received", f"{int(t.get('bytes_sent', 0)):,} / {int(t.get('bytes_received', 0)):,}"),
            ("server execution (meta.runtime)", f"{runtime:.2f} s"),
            # jobs submitted ahead overlap: a job's wait includes the run's own jobs ahead of it
            ("queue + dispatch (in flight − execution − download)", f"{queued:.2f} s"),
            ("client serialization", f"{t.get('serialize_s', 0.0):.2f} s"),
            ("submission uploads", f"{t.get('submit_s', 0.0):.2f} s"),
            ("status polls", f"{t.get('poll_s', 0.0):.2f} s over {int(t.get('polls', 0))} polls"),
            ("object-store download + load", f"{download:.2f} s"),
        ]
        print(
            f"\nwhere the last remote run's time went (its journal; {in_flight:.2f} s of jobs in flight, "
            "summed over overlapping jobs):"
        )
        for label, value in rows:
            print(f"  {label:<52} {value}")
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if not args.dir:
            real_stack.down(stack)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
