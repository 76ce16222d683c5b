"""How many CPU threads a local run gives torch, and why a run was slower than its estimate.

torch's default is one thread per core it sees, which a container's CPU quota (its
cgroup) does not reduce, and which takes no account of other busy processes: on a
2-core box beside one busy process its 2 threads take turns with that process at
every barrier (the quickstart took 98–114 s with 2 threads and 14 s with 1). So a
local run counts the CPUs it may use (affinity, then the cgroup's CPU quota), leaves
the ones other processes are running on to them (at least one thread stays), and says
what it chose in its header.
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` win when set, then ``--threads``, then the
spec's ``threads``. docs/reference.md "CPU threads" has the measurements.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
SLOW_FACTOR = 3.0  # a run this many times slower than its estimate says why
_CGROUP = Path("/sys/fs/cgroup")


def _own_cgroups(proc: Path) -> dict[str, str]:
    """/proc/self/cgroup as {controller: path}: "" for v2's single hierarchy."""
    out = {}
    try:
        for line in proc.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                out[controller] = path.strip("/")
    except (OSError, ValueError):
        pass
    return out


def _quota(folders: list[Path], v2: bool) -> float | None:
    """The smallest CPU quota over these cgroup folders (the process's and its ancestors)."""
    quotas = []
    for folder in folders:
        try:
            if v2:
                quota, period = (folder / "cpu.max").read_text().split()[:2]
                if quota != "max":
                    quotas.append(int(quota) / int(period))
            else:
                quota_us = int((folder / "cpu.cfs_quota_us").read_text())
                period_us = int((folder / "cpu.cfs_period_us").read_text())
                if quota_us > 0 and period_us > 0:
                    quotas.append(quota_us / period_us)
        except (OSError, ValueError):
            continue
    return min(quotas) if quotas else None


def cgroup_cpus(root: Path = _CGROUP, proc: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup, in CPUs (None: no limit or no cgroup), the
    smallest over its cgroup and the ones above it. v2: ``cpu.max`` = "QUOTA PERIOD" or
    "max PERIOD"; v1: ``cpu.cfs_quota_us`` (-1: none) over ``cpu.cfs_period_us`` under
    ``cpu/`` (or ``cpu,cpuacct/``)."""
    own = _own_cgroups(proc)

    def chain(base: Path, relative: str) -> list[Path]:
        parts = [p for p in relative.split("/") if p]
        return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]

    v2 = _quota(chain(root, own.get("", "")), v2=True)
    if v2 is not None:
        return v2
    for folder in ("cpu", "cpu,cpuacct"):
        v1 = _quota(chain(root / folder, own.get("cpu", "")), v2=False)
        if v1 is not None:
            return v1
    return None


def available_cpus(affinity: set[int] | None = None, quota: float | None = None) -> int:
    """CPUs this process may run on: its affinity mask, capped by the cgroup quota
    (rounded up: a quota of 1.5 CPUs keeps 2 threads busy half the time)."""
    if affinity is None:
        try:
            affinity = os.sched_getaffinity(0)
        except (AttributeError, OSError):  # not Linux
            affinity = set(range(os.cpu_count() or 1))
    cpus = max(1, len(affinity))
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota - 1e-9)))
    return cpus


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    cpus: int
    load: float | None
    source: str  # "OMP_NUM_THREADS", "MKL_NUM_THREADS", "--threads", "spec" or "auto"
    busy: int = 0  # CPUs other processes held when the run started
    previous: int | None = None  # torch's thread count before the run set it

    def header(self) -> str:
        """``torch threads: 2 (2 CPUs available; set --threads or OMP_NUM_THREADS)``."""
        if self.source in ENV_VARS:
            return f"torch threads: {self.threads} ({self.source}={self.threads}; {self.cpus} CPUs available)"
        if self.source != "auto":
            return f"torch threads: {self.threads} ({self.source}; {self.cpus} CPUs available)"
        load = "" if self.load is None else f", load {self.load:.1f}"
        busy = f", {self.busy} busy{load}" if self.busy else ""
        return f"torch threads: {self.threads} ({self.cpus} CPUs available{busy}; set --threads or OMP_NUM_THREADS)"


def busy_cpus(load: float | None, running: int | None = None) -> int:
    """CPUs other processes hold: the processes running right now besides this one
    (``running``, see ``running_others``) when known, else the 1-minute load average (a
    process running all the time adds 1; 0.8 counts once). The load average lags: it
    still counts a run that ended seconds ago, and misses a process started seconds ago."""
    if running is not None:
        return running
    return 0 if load is None else int(load + 0.2)


def running_others(path: Path = Path("/proc/loadavg"), samples: int = 5) -> int | None:
    """Runnable tasks besides this one: the median of a few samples 10 ms apart of the 4th
    field of /proc/loadavg ("running/total"; it counts this process too)."""
    import time

    counts = []
    for i in range(samples):
        try:
            counts.append(int(path.read_text().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return None
        if i + 1 < samples:
            time.sleep(0.01)
    return max(0, sorted(counts)[len(counts) // 2])


def choose(
    requested: int | None,
    source: str,
    env: Mapping[str, str] | None = None,
    cpus: int | None = None,
    load: float | None = None,
    running: int | None = None,
) -> ThreadChoice:
    """The thread count: an environment variable, else ``requested`` (from ``source``,
    "--threads" or "spec"), else the available CPUs less the busy ones (at least 1)."""
    env = os.environ if env is None else env
    cpus = available_cpus(quota=cgroup_cpus()) if cpus is None else cpus
    for var in ENV_VARS:
        value = env.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return ThreadChoice(int(value), cpus, load, var)
    if requested is not None:
        return ThreadChoice(requested, cpus, load, source)
    busy = min(cpus - 1, busy_cpus(load, running))
    return ThreadChoice(cpus - busy, cpus, load, "auto", busy)


def restore(choice: ThreadChoice) -> None:
    import torch

    if choice.previous is not None:
        torch.set_num_threads(choice.previous)


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def slow_note(seconds: float, estimate: float, threads: int, cpus: int, load: float | None) -> str | None:
    """A line when the computing took ``SLOW_FACTOR``× its estimate or more, with the likely
    cause. ``load`` is the load average at the end of the run, which counts this run's
    own ``threads``; more than that means other processes wanted the CPUs."""
    if estimate <= 0 or seconds < SLOW_FACTOR * estimate:
        return None
    head = f"computing took {seconds:.0f} s, {seconds / estimate:.0f}× the estimate of {estimate:.0f} s"
    others = None if load is None else load - min(threads, cpus)
    if others is not None and others >= 0.5:
        hint = "; try --threads 1" if threads > 1 else ""
        return f"{head}: the CPUs were busy (load {load:.1f} on {cpus} CPUs){hint}"
    if threads > cpus:
        return f"{head}: {threads} threads on {cpus} CPUs; try --threads {cpus}"
    return f"{head}: this machine is slower than the estimate's reference (2 idle cores)"
