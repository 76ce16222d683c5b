"""Where traces run. A backend is a value handed to the stages, not a fork of them:
the same tracing code runs locally and, through nnsight's remote execution, on NDIF.

Each stage groups its forward passes into *requests*: one ``model.session`` holding
several traces. Locally a request is just that session. Remotely it is one NDIF job:
submitted without blocking, its id written to the run directory before waiting, then
polled; a rerun on the same run directory picks the job up by id instead of
submitting it again. The engines use one pattern for every backend::

    request = backend.open(model, "evaluation", key)
    out = None
    if request.must_submit:
        with model.nn.session(**request.session_kwargs()):
            ...traces that nnsight.save(out)...
    out = request.result(out=out)["out"]
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from remote_steer.errors import SpecError
from remote_steer.remote.ndif import RemoteRequest
from remote_steer.remote.request import Request

if TYPE_CHECKING:
    from remote_steer.models.loading import LoadedModel

BackendKind = Literal["local", "simulated-remote", "remote"]
BACKEND_KINDS: tuple[str, ...] = get_args(BackendKind)


@dataclass
class Traffic:
    """What one stage cost on the wire and on the server."""

    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    server_seconds: float = 0.0  # submission to completion, as seen by the client
    retries: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class RetryPolicy:
    attempts: int = 6  # tries per HTTP call before giving up
    first_delay_s: float = 0.5
    max_delay_s: float = 15.0
    poll_interval_s: float = 2.0
    job_timeout_s: float = 6 * 3600.0
    # a job id the server answers 404 for (it restarted and forgot the job) is resubmitted
    # after this long; NDIF also answers 404 for the moment between submission and queueing
    lost_job_grace_s: float = field(default_factory=lambda: _env_seconds("REMOTE_STEER_LOST_JOB_GRACE_S", 120.0))
    # a job NDIF ends because its replica was evicted or the deployment was unreachable is
    # sent again at most this many times (over reruns too), then the run stops
    infrastructure_resubmits: int = 3
    # a job's first status poll waits this long, each later one 1.5× longer, up to
    # poll_interval_s: a job done in half a second is seen then, not after a full
    # interval (on ndif 0.1.2 here the fixed 2 s wait was most of a small job's time)
    first_poll_s: float = 0.2

    def poll_waits(self) -> Iterator[float]:
        """Seconds to wait before each next status poll of one job."""
        wait = min(self.first_poll_s, self.poll_interval_s)
        while True:
            yield wait
            wait = min(wait * 1.5, self.poll_interval_s)

    def delays(self):
        delay = self.first_delay_s
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.max_delay_s)


@dataclass
class Backend:
    """``local``: traces run in-process. ``simulated-remote``: in-process through
    nnsight's remote serialization path (``remote="local"``), proving a trace body
    survives shipping. ``remote``: an NDIF(-protocol) server at ``host``.
    """

    kind: BackendKind = "local"
    host: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never printed or written
    journal_dir: Path | None = None  # where remote job ids are recorded
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_status: Callable[[str, str], None] | None = None  # (stage, server job state)
    on_note: Callable[[str], None] | None = None  # a line worth telling the user (a job lost, a URL expired)
    traffic: dict[str, Traffic] = field(default_factory=dict)
    # set while a stage submits every chunk's job before waiting (remote only): a request's
    # result() then raises ResultDeferred once its job is submitted and journaled
    defer_results: bool = False

    def __post_init__(self) -> None:
        if self.kind not in BACKEND_KINDS:
            raise SpecError(f"backend {self.kind!r}: expected one of {', '.join(BACKEND_KINDS)}")
        if self.kind == "remote":
            self.host = (self.host or os.environ.get("NDIF_HOST") or _nnsight_default_host()).rstrip("/")
            if not self.host.startswith(("http://", "https://")):
                raise SpecError(f"backend host {self.host!r}: expected an http:// or https:// URL")
            if self.api_key is None:
                self.api_key = os.environ.get("NDIF_API_KEY") or _nnsight_default_key()

    @property
    def is_remote(self) -> bool:
        return self.kind == "remote"

    def stage_traffic(self, stage: str) -> Traffic:
        return self.traffic.setdefault(stage, Traffic())

    def trace_kwargs(self, stage: str) -> dict[str, Any]:
        """Keyword arguments for a single ``model.trace`` (no job journal)."""
        self.stage_traffic(stage).requests += 1
        if self.kind == "simulated-remote":
            return {"remote": "local"}
        if self.kind == "remote":
            raise SpecError("single traces are not sent remotely; open a request with Backend.open")
        return {}

    def open(self, model: LoadedModel, stage: str, key: str | None = None) -> Request:
        return REQUESTS[self.kind](self, model, stage, key)


class LocalRequest(Request):
    def __init__(self, backend: Backend, stage: str) -> None:
        self.backend, self.stage = backend, stage
        self.started = time.perf_counter()
        backend.stage_traffic(stage).requests += 1

    def session_kwargs(self) -> dict[str, Any]:
        return {"remote": "local"} if self.backend.kind == "simulated-remote" else {}

    def result(self, **local_values: Any) -> dict[str, Any]:
        # In-process: the session pushed the saved values into the caller's frame.
        return local_values


def _local_request(backend: Backend, model: LoadedModel, stage: str, key: str | None) -> Request:
    return LocalRequest(backend, stage)  # in-process: nothing to journal or resume


# The request each kind of backend opens: a new kind is one entry here and its own module.
REQUESTS: dict[str, Callable[[Backend, LoadedModel, str, str | None], Request]] = {
    "local": _local_request,
    "simulated-remote": _local_request,
    "remote": RemoteRequest,
}


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SpecError(f"environment variable {name}={raw!r}: expected a number of seconds") from None
    if value < 0:
        raise SpecError(f"environment variable {name}={raw!r}: expected a number of seconds ≥ 0")
    return value


def _nnsight_default_host() -> str:
    from nnsight.schema.config import CONFIG

    return CONFIG.API.HOST


def _nnsight_default_key() -> str | None:
    from nnsight.schema.config import CONFIG

    return CONFIG.API.APIKEY
