"""The shape every backend's request has, apart from any backend (no imports of them).

A request is one group of traces: a ``model.session`` locally, one NDIF job remotely.
The engines use it as ``backend.open(...)`` describes, so a backend adds a kind of
request without the engines importing its transport: each transport module (``ndif.py``)
subclasses ``Request`` and ``backend.py``'s ``REQUESTS`` names it under its kind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol


class ResultDeferred(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a remote request's ``result`` while its backend defers results: the job
    is submitted and journaled, and a later ``result`` for the same key polls it by id.
    Lets a stage submit all its chunks' jobs before waiting on the first."""


class Request:
    """One group of traces: a session locally, a job remotely."""

    must_submit: bool = True

    def session_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def result(self, **local_values: Any) -> dict[str, Any]:
        raise NotImplementedError


class Transport(Protocol):
    """What a transport module reads of its backend (``backend.Backend`` is one), so that it
    need not import ``backend.py``, which imports it to register its request kind."""

    host: str | None
    api_key: str | None
    journal_dir: Path | None
    retry: Any  # backend.RetryPolicy: attempts, delays()
    on_status: Callable[[str, str], None] | None
    on_note: Callable[[str], None] | None
    defer_results: bool

    def stage_traffic(self, stage: str) -> Any: ...  # backend.Traffic
