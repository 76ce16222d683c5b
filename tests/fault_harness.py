"""Runs for the fault-injection tests (tests/test_faults.py), forked from one process.

Importing torch, transformers and nnsight takes seconds; a kill -9 ends a process.
So this script imports once, never runs a tensor operation itself (forking after torch
has started its thread pools is unsafe), and forks one child per run:

    python tests/fault_harness.py kills SEED OUT   # clean run, then 10 runs killed at random points, then one to finish
    python tests/fault_harness.py race OUT         # two runs of one spec at once

It prints one JSON object: what each child reported (exit code, computed and skipped
chunks, or its one-line error) and whether it was killed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time

from toy_spec import toy_spec_text

TINY = toy_spec_text(
    "tiny",
    head='seed = 1\noutput_dir = "{out}"',
    max_items=10,
    layers=(4, 8),
    tail="batch_size = 16\nchunk_items = 1",
)


def _die_at(kill: tuple[str, int] | None) -> None:
    """Arrange this child's own SIGKILL: after its n-th part (``("part", n)``), or inside
    its n-th atomic write, the temporary file written and not yet renamed (``("write", n)``)."""
    if kill is None:
        return
    kind, n = kill
    counter = {"n": 0}

    def count() -> None:
        counter["n"] += 1
        if counter["n"] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    if kind == "write":
        real = os.replace

        def replace(src, dst, *args, **kwargs):
            count()
            return real(src, dst, *args, **kwargs)

        os.replace = replace  # type: ignore[assignment]
    else:
        HOOKS.append(count)


HOOKS: list = []


def _child(out: str, write_fd: int, pause: float, kill: tuple[str, int] | None) -> None:
    """In the forked child: run the tiny spec into ``out``, report on ``write_fd``, exit."""
    import torch

    torch.set_num_threads(1)
    _die_at(kill)
    from remote_steer.errors import RemoteSteerError
    from remote_steer.run.runner import run_experiment
    from remote_steer.run.spec import parse_spec

    report: dict = {}
    code = 0
    try:

        def after_part() -> None:
            time.sleep(pause)
            for hook in HOOKS:
                hook()

        outcome = run_experiment(parse_spec(TINY.format(out=out), "tiny.toml"), after_part=after_part)
        report = {"computed": outcome.computed_parts, "skipped": outcome.skipped_parts}
    except RemoteSteerError as error:
        report, code = {"line": str(error)}, 2
    except BaseException as error:  # noqa: BLE001 - the test fails on it, with the type named
        report, code = {"line": f"{type(error).__name__}: {error}"}, 1
    os.write(write_fd, json.dumps({"exit": code, **report}).encode())
    os._exit(code)


def spawn(out: str, pause: float = 0.0, kill: tuple[str, int] | None = None) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(out, write_fd, pause, kill)
    os.close(write_fd)
    return pid, read_fd


def finish(pid: int, read_fd: int, kill_after: float | None = None) -> dict:
    """Wait for the child (killing it with SIGKILL after ``kill_after`` s, if still running)."""
    started, killed = time.monotonic(), False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if kill_after is not None and time.monotonic() - started >= kill_after:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)  # reaped: its pid is no longer alive
            killed = True
            break
        time.sleep(0.01)
    with os.fdopen(read_fd, "rb") as pipe:
        text = pipe.read().decode()
    reported = json.loads(text) if text else {}
    killed = killed or (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL) if done else killed
    return {"killed": killed and not reported, "seconds": round(time.monotonic() - started, 2), **reported}


def kills(seed: int, out: str) -> dict:
    clean = finish(*spawn(os.path.join(out, "clean")))
    rng = random.Random(seed)
    runs = []
    killed = os.path.join(out, "killed")
    for i in range(10):  # killed while preparing, after a part, or halfway through a write
        if i % 3 == 0:
            runs.append({"kill_after_s": (after := round(rng.uniform(0.1, 0.6) * clean["seconds"], 2))})
            runs[-1].update(finish(*spawn(killed), kill_after=after))
        else:
            kill = ("part", rng.randint(1, 2)) if i % 3 == 1 else ("write", rng.randint(1, 6))
            runs.append({"kill_at": kill})
            runs[-1].update(finish(*spawn(killed, kill=kill)))
    last = finish(*spawn(os.path.join(out, "killed")))
    return {"clean": clean, "runs": runs, "last": last}


def race(out: str) -> dict:
    first, second = spawn(out, pause=0.4), spawn(out, pause=0.4)
    return {"runs": [finish(*first), finish(*second)]}


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import remote_steer.run.runner  # noqa: F401 - imported once, before any fork

    result = kills(int(sys.argv[2]), sys.argv[3]) if sys.argv[1] == "kills" else race(sys.argv[2])
    print(json.dumps(result))
