"""The pytest session fixture ``ndif_stack``: NDIF's own server (ndif 0.1.2) on this
machine, auth on, the two toys and the embedded SmolLM2 deployed with the CPU actor.

It yields a ``RealStack`` (host URL, the test API key, the deployed model keys). It is
started once per session, only when a test asks for it, and torn down at the end of the
session (only the processes it started; a process that outlives the tear-down fails the
session). ``NDIF_STACK_KEEP_LOGS=1`` keeps the stack's directory (logs) after it.

Where the stack is not installed (``bash tests/ndif_stack/install.sh`` not run) the tests
that need it skip with one line saying so; under CI (``CI=true``) that is a failure
instead, since ``scripts/check`` (which ``.ci/run`` runs) installs it first.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from ndif_stack import stack as _stack


@dataclass(frozen=True)
class RealStack:
    host: str
    api_key: str = field(repr=False)
    models: dict[str, str]  # remote_steer model name -> the model key deployed for it
    root: str  # the stack's directory (logs under logs/)

    def client_env(self) -> dict[str, str]:
        """Environment for a client process: the host and the test key."""
        return {"NDIF_HOST": self.host, "NDIF_API_KEY": self.api_key}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def ndif_stack() -> Iterator[RealStack]:
    missing = _stack.installed()
    if missing:
        if _in_ci():
            pytest.fail(f"real NDIF stack: {missing}; scripts/check installs it before the tests", pytrace=False)
        pytest.skip(f"real NDIF stack: {missing}")
    try:
        # The watchdog ends the stack even if this pytest process is killed before its tear-down.
        started = _stack.up(log=lambda line: print(line, file=sys.stderr), owner=os.getpid())
    except _stack.StackError as error:
        pytest.fail(f"real NDIF stack did not come up: {error}", pytrace=False)
    try:
        yield RealStack(started.host, started.api_key, dict(started.models), started.root)
    finally:
        keep = os.environ.get("NDIF_STACK_KEEP_LOGS")
        procs = _stack.stack_processes(started)
        _stack.down(started, remove=not keep)
        left = [p.pid for p in procs if p.alive()]
        if left:
            pytest.fail(f"real NDIF stack: processes {left} outlived the tear-down", pytrace=False)
