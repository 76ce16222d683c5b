"""The shape every backend's request has, apart from any backend (no imports of them).

A request is one group of traces: a ``model.session`` locally, one NDIF job remotely.
The engines use it as ``backend.open(...)`` describes, so a backend adds a kind of
request without the engines importing its transport: each transport module (``ndif.py``)
subclasses ``Request`` and ``backend.py``'s ``REQUESTS`` names it under its kind.
"""

from __future__ import annotations

from typing import Any


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
