"""One writer per run directory: ``<run>/.lock`` names the process that holds it.

The lock file is created exclusively (``O_EXCL``) and holds the holder's pid, host,
process start time and command. A second writer refuses in one line naming them. A
lock whose process is gone (same host, pid not alive, or alive but started at another
time: the pid was reused) was left by a killed run and is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remote_steer.errors import RemoteSteerError


class RunLocked(RemoteSteerError):
    """Another process is writing this run directory."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    started: str | None
    command: str

    def describe(self) -> str:
        return f"process {self.pid} on {self.host} ({self.command})"

    def gone(self) -> bool:
        """True when this holder is certainly dead: same host, and its pid is not alive
        or now belongs to a process started at another time."""
        if self.host != socket.gethostname():
            return False
        if not _alive(self.pid):
            return True
        started = _start_time(self.pid)
        return self.started is not None and started is not None and started != self.started


def me() -> Holder:
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:3]]) if sys.argv and sys.argv[0] else "python"
    return Holder(os.getpid(), socket.gethostname(), _start_time(os.getpid()), command[:60])


def holder(path: Path) -> Holder | None:
    """Who holds the lock at ``path`` (None if nobody; an unreadable lock counts as a
    dead holder on this host, so it is taken over)."""
    try:
        data: Any = json.loads(Path(path).read_text())
        return Holder(int(data["pid"]), str(data["host"]), data.get("started"), str(data.get("command", "")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return Holder(-1, socket.gethostname(), None, "unreadable lock")


class RunLock:
    """``with RunLock(path, run_dir):`` holds the run directory's lock inside the block."""

    def __init__(self, path: Path, what: Path) -> None:
        self.path, self.what = Path(path), Path(what)
        self.held = False

    def acquire(self) -> None:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                current = holder(self.path)
                if current is not None and not current.gone():
                    raise RunLocked(
                        f"{self.what}: being written by {current.describe()}; wait for it to finish, or stop it "
                        "(a rerun resumes where it stopped)"
                    ) from None
                self._take_over(current)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(me().__dict__, handle)
            self.held = True
            return
        raise RunLocked(f"{self.what}: could not take the lock {self.path}; another process keeps taking it")

    def _take_over(self, stale: Holder | None) -> None:
        """Remove a dead holder's lock, unless another process replaced it meanwhile."""
        if stale is None:
            return
        try:
            if holder(self.path) == stale:
                self.path.unlink()
        except FileNotFoundError:
            pass

    def release(self) -> None:
        if self.held:
            self.held = False
            current = holder(self.path)
            if current is not None and current.pid == os.getpid():
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()
