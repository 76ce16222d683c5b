"""NDIF transport: nnsight's own remote client, made durable and accountable.

``NdifClient`` extends nnsight's ``RemoteBackend`` (the code that speaks NDIF's
protocol) with what a long sweep needs against NDIF as deployed:

- **Request-scoped source names.** nnsight ships a trace body as source text under
  the client's file name, and the server caches parsed ``with`` blocks by that name
  (``nnsight.tracing.globals`` ``SOURCES``/``BLOCKS``). A long-lived server that never
  clears those caches parses a second, different body from the same file against the
  first one (``WithBlockNotFoundError``) or silently reruns the first one. Each
  request therefore ships under ``<file> <remote-steer SHA>``, the hash of its own
  body: identical bodies share the server's cache, different bodies never collide.
- **Bounded retries** on transient failures (connection refused/reset, timeouts, 5xx).
- **Auth only where NDIF checks it.** ``/status`` and ``/response`` are open; the key is
  checked when a job is submitted: a 401 (none), 400 (malformed) or 403 (unknown) on
  submission means "key refused"; a 503 ``Auth backend unavailable`` means the server
  could not check it (retried, bounded, then said so).
- **Infrastructure failures are resubmitted.** A job NDIF ends with ``ERROR`` because its
  model replica was evicted or the request never reached the deployment is sent again
  from the kept payload (bounded, journaled); an error raised by the trace code stops
  the run with the server's traceback.
- **Lost jobs and expired results.** A job id the server answers 404 for past a grace
  period (server restarted) is resubmitted from the payload kept in the journal; a
  result URL that has expired (403) is fetched again if the server signs a fresh one,
  else the job is resubmitted. Each outcome is journaled and counted.

``RemoteRequest`` submits one job without blocking, journals its id (and payload) in
the run directory *before* waiting, and polls; a rerun finds the journal and polls the
same job instead of submitting it again. Nothing here draws: job states go to
``Backend.on_status``. The API key is sent only as nnsight's ``ndif-api-key`` header;
every message that leaves this module is passed through ``redact``.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as _dt
import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from remote_steer.errors import RemoteSteerError
from remote_steer.remote.request import Request, ResultDeferred, Transport
from remote_steer.remote.status import RemoteUnavailable, _status_code
from remote_steer.rundir import journal

if TYPE_CHECKING:
    from remote_steer.models.loading import LoadedModel

__all__ = ["RemoteAuthError", "RemoteJobError", "RemoteUnavailable", "NdifClient", "RemoteRequest"]


class RemoteJobError(RemoteSteerError):
    """The server ran the job and it failed; the message carries the remote traceback."""


class RemoteAuthError(RemoteSteerError):
    """The server refused the API key, or none was set and the server needs one."""


_AUTH_HINT = (
    "set NDIF_API_KEY in the environment (or save it once with "
    "`python -c \"import nnsight; nnsight.CONFIG.set_default_api_key('KEY')\"`)"
)

#: Ship each request under a file name unique to its body (see the module docstring).
#: Only tests turn this off, to show what a cache-keeping server does without it.
SCOPE_SOURCE_NAMES = True


def redact(text: str, key: str | None) -> str:
    return text.replace(key, "***") if key else text


def _transient(error: BaseException) -> bool:
    """Connection refused/reset, timeouts, dropped connections and 5xx are worth a retry."""
    import httpx

    code = _status_code(error)
    if code is not None:
        return code >= 500
    for candidate in (error, error.__cause__, error.__context__):
        if isinstance(candidate, (httpx.TransportError, ConnectionError, TimeoutError)):
            return True
    return False


def auth_error(host: str, code: int | None, api_key: str | None, what: str) -> RemoteAuthError:
    if not api_key:
        return RemoteAuthError(
            f"{host} needs an API key and none is set (NDIF_API_KEY is missing) to {what}; {_AUTH_HINT}"
        )
    why = {400: "malformed: NDIF keys look like xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", 403: "unknown to the server"}
    reason = f"HTTP {code}: {why[code]}" if code in why else f"HTTP {code}"
    return RemoteAuthError(f"{host} refused the API key ({reason}) while trying to {what}; {_AUTH_HINT}")


#: Submission answers, by what they mean. NDIF answers 400 both for a malformed key and for
#: a client it will not serve (too old an nnsight or python): the detail tells them apart.
def _refused_key(code: int | None, message: str) -> bool:
    return code in (401, 403) or (code == 400 and "api key" in message.lower())


def _auth_backend_down(code: int | None, message: str) -> bool:
    return code == 503 and "auth backend" in message.lower()


#: ERROR messages with which NDIF ends a job that never ran to completion for reasons of its
#: own (ndif/services/api/queue/replica.py): the replica was evicted or restarted, or the
#: request could not be handed to the model deployment. Resubmitting the payload is safe.
INFRASTRUCTURE_ERRORS = (
    "replica was evicted",
    "error submitting request to model deployment",
)


def infrastructure_error(message: str) -> bool:
    lowered = message.lower()
    return any(pattern in lowered for pattern in INFRASTRUCTURE_ERRORS)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


@contextlib.contextmanager
def scoped_source_name(tracer):
    """While serializing ``tracer``, name its frame ``<file> <remote-steer HASH>``."""
    from nnsight.tracing import util

    node = getattr(tracer, "node", None)
    if not SCOPE_SOURCE_NAMES or node is None:
        yield
        return
    body = ast.unparse(ast.Module(body=node.body, type_ignores=[]))
    tag = hashlib.sha256(f"{node.body[0].lineno}\n{body}".encode()).hexdigest()[:16]
    original = util.SerializedFrame.__dict__["of"]

    def of(cls, frame):
        code = frame.f_code
        return cls(f"{code.co_filename} <remote-steer {tag}>", code.co_firstlineno, code.co_name)

    util.SerializedFrame.of = classmethod(of)
    try:
        yield
    finally:
        util.SerializedFrame.of = original


class ResultExpired(RemoteSteerError):
    """The job completed but its result URL no longer answers (signed URLs expire)."""

    def __init__(self, url: str, code: int | None) -> None:
        super().__init__(f"result URL answered HTTP {code}")
        self.url, self.code = url, code


UNKNOWN = "UNKNOWN"  # the server answers 404 for the job id


def _nnsight_remote_backend() -> Any:
    from nnsight.intervention.backends.remote import RemoteBackend

    return RemoteBackend


_RemoteBackend: Any = _nnsight_remote_backend()  # nnsight is untyped: the base class is Any to mypy


class NdifClient(_RemoteBackend):
    """nnsight's RemoteBackend in non-blocking mode, with retries, accounting, and
    the NDIF-as-deployed behaviours above."""

    def __init__(
        self, backend: Transport, stage: str, model_key: str, env: dict, job_id: str | None = None, on_payload=None
    ) -> None:
        super().__init__(
            model_key, host=backend.host, api_key=backend.api_key or "", env=env, blocking=False, job_id=job_id
        )
        self.display.enabled = False  # our own display shows job states
        self._backend, self._stage = backend, stage
        self.payload: bytes | None = None  # the last serialized request, kept for resubmission
        self._on_payload = on_payload
        self.timing: dict[str, float] = {}  # client-side seconds per phase since the last take_timing()
        self.server_meta: dict[str, Any] | None = None  # NDIF's cost report on the job (meta.runtime: seconds)

    def _time(self, phase: str, started: float) -> None:
        self.timing[phase] = self.timing.get(phase, 0.0) + time.perf_counter() - started

    def take_timing(self) -> dict[str, float]:
        taken, self.timing = self.timing, {}
        return taken

    @property
    def traffic(self):
        return self._backend.stage_traffic(self._stage)

    def _retrying(self, call, what: str, auth_matters: bool = False):
        """``call()``, retried on transient failures; every failure that leaves is one
        redacted line (the server may echo the key back, e.g. NDIF's 400 does)."""
        from nnsight.intervention.backends.remote import RemoteError

        delays = self._backend.retry.delays()
        while True:
            try:
                return call()
            except Exception as error:  # noqa: BLE001 - classified below
                code = _status_code(error)
                message = redact(_one_line(f"{error}"), self.api_key)
                if auth_matters and _refused_key(code, message):
                    raise auth_error(self.host, code, self.api_key, what) from None
                if auth_matters and code is not None and 400 <= code < 500:
                    raise RemoteUnavailable(
                        f"{self.host} refused the request to {what} (HTTP {code}: {message})"
                    ) from None
                if not _transient(error):
                    if isinstance(error, RemoteError):
                        raise RemoteUnavailable(f"{self.host}: could not {what} ({message})") from None
                    raise
                delay = next(delays, None)
                if delay is None:
                    attempts = self._backend.retry.attempts
                    if auth_matters and _auth_backend_down(code, message):
                        raise RemoteUnavailable(
                            f"{self.host}: the server's auth backend is unavailable (HTTP 503 after {attempts} "
                            "attempts), so it cannot check any API key; try again later"
                        ) from None
                    raise RemoteUnavailable(
                        f"{self.host}: could not {what} after {attempts} attempts ({type(error).__name__}: {message}); "
                        "rerun the same command to resume: journaled jobs are polled, not resubmitted"
                    ) from None
                self.traffic.retries += 1
                time.sleep(delay)

    def _serialize(self, tracer):
        started = time.perf_counter()
        with scoped_source_name(tracer):
            blob = super()._serialize(tracer)
        self._time("serialize_s", started)
        self.payload = blob
        if self._on_payload is not None:
            self._on_payload(blob)  # journaled before it is sent
        return blob

    def _post(self, request, blob):
        started = time.perf_counter()
        response = self._retrying(
            lambda: super(NdifClient, self)._post(request, blob), "submit a job", auth_matters=True
        )
        self.traffic.bytes_sent += len(blob)
        self._time("submit_s", started)
        return response

    def resubmit(self, blob: bytes) -> str:
        """Send a kept payload again as a new job; returns the new job id."""
        from nnsight.schema.request import RequestModel

        response = self._post(RequestModel(model_key=self.model_key, compress=self.compress, env=self.env), blob)
        self.job_id, self.status = response.id, response.status
        return self.job_id

    def finalize(self, content: bytes):
        self.traffic.bytes_received += len(content)
        return super().finalize(content)

    def check(self) -> tuple[str, Any]:
        """One poll: (state, saves). State ``UNKNOWN`` when the server answers 404;
        saves are set once COMPLETED. Raises ``ResultExpired`` when the result URL
        is refused, ``RemoteError`` when the job failed on the server."""
        import httpx
        from nnsight.schema.response import ResponseModel

        def get():
            with httpx.Client(timeout=httpx.Timeout(10.0, read=600.0)) as client:
                answer = client.get(f"{self.host}/response/{self.job_id}")
            if answer.status_code != 404:
                answer.raise_for_status()
            return answer

        started = time.perf_counter()
        answer = self._retrying(get, f"poll job {self.job_id}")
        self._time("poll_s", started)
        self.timing["polls"] = self.timing.get("polls", 0) + 1
        if answer.status_code == 404:
            return UNKNOWN, None
        response = ResponseModel.model_validate_json(answer.text)
        self.status = response.status
        if response.meta is not None:
            self.server_meta = response.meta
        if not self.note(response):
            return response.status.value, None
        data = response.data
        try:
            started = time.perf_counter()
            saves = self._retrying(lambda: self.download_result(data), f"download the result of job {self.job_id}")
            self._time("download_s", started)
        except httpx.HTTPStatusError as error:
            code = _status_code(error)
            if code in (400, 401, 403, 404, 410):
                raise ResultExpired(str(data), code) from None
            raise
        return response.status.value, saves

    def poll(self, tracer=None):  # nnsight's entry point, kept for callers that use it
        return self.check()[1]


class RemoteRequest(Request):
    """One NDIF job: submit (or resume by journaled id), then poll to completion.

    The journal (``jobs/<key>.json``) holds every attempt at this job: its id, state
    (submitted, completed, failed, lost, expired) and bytes; the payload of the
    latest submission sits beside it (``jobs/<key>.payload``) until the job completes,
    so a job the server lost can be sent again without re-tracing.
    """

    def __init__(self, backend: Transport, model: LoadedModel, stage: str, key: str | None) -> None:
        self.backend, self.model, self.stage, self.key = backend, model, stage, key
        where = backend.journal_dir
        self.journal = None if where is None or key is None else journal.job_path(where, key)
        self.payload_path = None if where is None or key is None else journal.payload_path(where, key)
        self.entry = self._read_journal()
        attempt = self.entry["attempts"][-1] if self.entry["attempts"] else None
        known = attempt["job_id"] if attempt and attempt["state"] in ("submitted", "completed") else None
        self.client = NdifClient(
            backend,
            stage,
            model.nn.to_model_key(),
            model.nn._remoteable_get_env(),
            known,
            on_payload=self._keep_payload,
        )
        self.must_submit = known is None

    # -- journal -----------------------------------------------------------------

    def _read_journal(self) -> dict[str, Any]:
        empty = journal.empty_entry(self.key, self.stage, self.model.name, self.backend.host)
        if self.journal is None:
            return empty
        entry = journal.read_job(self.journal, empty)
        if entry.get("host") != self.backend.host:
            return {**empty, "previous_hosts": [entry.get("host")]}
        return entry

    def _save_journal(self) -> None:
        if self.journal is not None:
            journal.write_job(self.journal, self.entry)

    def _keep_payload(self, blob: bytes) -> None:
        if self.payload_path is not None:
            journal.write_payload(self.payload_path, blob)

    def _payload(self) -> bytes | None:
        if self.client.payload is not None:
            return self.client.payload
        if self.payload_path is not None and self.payload_path.exists():
            return self.payload_path.read_bytes()
        return None

    def _attempt(self) -> dict[str, Any]:
        return self.entry["attempts"][-1]

    def _new_attempt(self, how: str) -> None:
        payload = self._payload()
        self.entry["attempts"].append(
            {
                "job_id": self.client.job_id,
                "state": "submitted",
                "how": how,
                "submitted_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "submitted_unix": time.time(),
                "bytes_sent": len(payload) if payload is not None else 0,
                "bytes_received": 0,
                "retries": 0,
                "client_s": _rounded(self.client.take_timing()),
            }
        )
        self.backend.stage_traffic(self.stage).requests += 1
        self._save_journal()

    def _close_attempt(self, state: str, **extra: Any) -> None:
        attempt = self._attempt()
        attempt.update(state=state, **extra)
        timing = attempt.setdefault("client_s", {})
        for phase, value in self.client.take_timing().items():
            timing[phase] = round(timing.get(phase, 0.0) + value, 4)
        if self.client.server_meta is not None:
            attempt["server"] = {k: v for k, v in self.client.server_meta.items() if k == "runtime"}
            self.client.server_meta = None
        if "submitted_unix" in attempt:
            attempt["seconds"] = round(time.time() - attempt["submitted_unix"], 3)
        self._save_journal()

    def _resubmit(self, why: str) -> None:
        payload = self._payload()
        if payload is None:
            raise RemoteUnavailable(
                f"{self.backend.host}: {why}, and its request payload was not kept; rerun to submit it again"
            )
        self.client.resubmit(payload)
        self._new_attempt(how=why)
        self._tell(why)
        if self.backend.on_status is not None:
            self.backend.on_status(self.stage, "RESUBMITTED")

    def _evictions(self) -> int:
        """Infrastructure resubmissions of this job so far, reruns included (from the journal)."""
        return sum(1 for attempt in self.entry["attempts"] if attempt.get("state") == "evicted")

    def _tell(self, line: str) -> None:
        if self.backend.on_note is not None:
            self.backend.on_note(f"{self.key or self.stage}: {line}")

    # -- the request -------------------------------------------------------------

    def session_kwargs(self) -> dict[str, Any]:
        return {"backend": self.client}

    def result(self, **local_values: Any) -> dict[str, Any]:
        client, backend, policy = self.client, self.backend, self.backend.retry
        if self.must_submit:
            if client.job_id is None:
                raise RemoteUnavailable(f"{backend.host}: the job for {self.key or self.stage} was not submitted")
            self._new_attempt(how="submitted")  # before waiting: a rerun resumes this job
        if backend.defer_results and self.key is not None and self.journal is not None:
            raise ResultDeferred(self.key)  # journaled: the stage's second pass polls it by id
        from nnsight.intervention.backends.remote import RemoteError

        deadline = time.monotonic() + policy.job_timeout_s
        unknown_since: float | None = None
        last = None
        received_before = client.traffic.bytes_received
        retries_before = client.traffic.retries
        waits = policy.poll_waits()
        while True:
            try:
                state, saves = client.check()
            except RemoteError as error:
                if infrastructure_error(str(error)) and self._evictions() < policy.infrastructure_resubmits:
                    failed = client.job_id
                    self._close_attempt("evicted", error=redact(_one_line(str(error), 200), backend.api_key))
                    self._resubmit(
                        f"job {failed} ended by the server's infrastructure ({_one_line(str(error), 80)}); resubmitted"
                    )
                    unknown_since, last = None, None
                    deadline = time.monotonic() + policy.job_timeout_s
                    waits = policy.poll_waits()
                    time.sleep(next(waits))
                    continue
                self._close_attempt("failed")
                raise RemoteJobError(
                    redact(
                        f"remote job {client.job_id} ({self.key or self.stage}) failed on {backend.host}:\n{error}",
                        backend.api_key,
                    )
                ) from None
            except ResultExpired as expired:
                state, saves = self._after_expired(expired)
            if state == UNKNOWN:
                now = time.monotonic()
                unknown_since = unknown_since or now
                if now - unknown_since >= policy.lost_job_grace_s:
                    lost = client.job_id
                    self._close_attempt("lost")
                    self._resubmit(
                        f"job {lost} unknown to the server after {policy.lost_job_grace_s:g}s "
                        "(server restarted?); resubmitted"
                    )
                    unknown_since = None
                    deadline = time.monotonic() + policy.job_timeout_s
                    waits = policy.poll_waits()
            else:
                unknown_since = None
            if state != last and backend.on_status is not None:
                backend.on_status(self.stage, "SUBMITTED" if state == UNKNOWN else state)
            last = state
            if saves is not None:
                break
            if time.monotonic() > deadline:
                raise RemoteUnavailable(
                    f"{backend.host}: job {client.job_id} did not finish within {policy.job_timeout_s:.0f}s; "
                    "rerun to keep waiting"
                )
            time.sleep(next(waits))
        self._close_attempt(
            "completed",
            bytes_received=client.traffic.bytes_received - received_before,
            retries=client.traffic.retries - retries_before,
        )
        if self.payload_path is not None:
            self.payload_path.unlink(missing_ok=True)
        backend.stage_traffic(self.stage).server_seconds += self._attempt().get("seconds", 0.0)
        return saves

    def _after_expired(self, expired: ResultExpired) -> tuple[str, Any]:
        """The result URL was refused: fetch a freshly signed one if the server gives
        one, else resubmit. Never a key problem: NDIF's result URLs carry no key."""
        client = self.client
        try:
            state, saves = client.check()
        except ResultExpired as again:
            if again.url != expired.url:
                raise RemoteUnavailable(
                    f"{self.backend.host}: a fresh result URL for job {client.job_id} was refused too "
                    f"(HTTP {again.code})"
                ) from None
            self._close_attempt("expired")
            self._resubmit(
                f"result URL of job {client.job_id} expired (HTTP {expired.code}) "
                "and the server signs no fresh one; resubmitted"
            )
            return "RESUBMITTED", None
        self._tell(f"result URL of job {client.job_id} expired (HTTP {expired.code}); fetched a freshly signed one")
        if self.backend.on_status is not None:
            self.backend.on_status(self.stage, "FRESH URL")
        return state, saves


def _rounded(timing: dict[str, float]) -> dict[str, float]:
    return {phase: round(value, 4) for phase, value in timing.items()}


#: Client-side phases summed from the journal, beside the server's own runtime.
PHASES = ("serialize_s", "submit_s", "poll_s", "polls", "download_s")


def journal_traffic(jobs_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """model → stage → traffic, summed over every journaled attempt in ``jobs_dir``
    (resumed runs included)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in journal.entries(jobs_dir):
        model, stage = entry.get("model"), entry.get("stage")
        if model is None or stage is None:
            continue
        t = out.setdefault(model, {}).setdefault(
            stage,
            {
                "requests": 0,
                "bytes_sent": 0,
                "bytes_received": 0,
                "server_seconds": 0.0,
                "retries": 0,
                "lost": 0,
                "expired": 0,
                "failed": 0,
                "evicted": 0,
                "server_runtime_s": 0.0,
                **dict.fromkeys(PHASES, 0.0),
            },
        )
        for attempt in entry.get("attempts", []):
            t["requests"] += 1
            t["bytes_sent"] += int(attempt.get("bytes_sent", 0))
            t["bytes_received"] += int(attempt.get("bytes_received", 0))
            t["retries"] += int(attempt.get("retries", 0))
            t["server_seconds"] = round(t["server_seconds"] + float(attempt.get("seconds", 0.0)), 3)
            runtime = float((attempt.get("server") or {}).get("runtime", 0.0) or 0.0)
            t["server_runtime_s"] = round(t["server_runtime_s"] + runtime, 4)
            for phase in PHASES:
                t[phase] = round(t[phase] + float((attempt.get("client_s") or {}).get(phase, 0.0)), 4)
            if attempt.get("state") in ("lost", "expired", "failed", "evicted"):
                t[attempt["state"]] += 1
    return out


def probe_key(backend: Transport, model: LoadedModel) -> int:
    """Submit the smallest job there is (one token, one saved scalar) to learn whether
    the server accepts the key, before anything larger is sent. NDIF checks the key
    only on submission, so this is the first moment it can be known. The probe job is
    not waited for. Returns the bytes sent; raises ``RemoteAuthError`` when refused."""
    import torch

    client = NdifClient(backend, "probe", model.nn.to_model_key(), model.nn._remoteable_get_env())
    layer = model.layers[0]
    ids = {"input_ids": torch.zeros(1, 1, dtype=torch.long)}
    with model.nn.trace(ids, backend=client):
        # bound, as a save must be, to make the job return one scalar; the client never waits for it
        _probe = layer.output[0, 0, 0].save()
    backend.stage_traffic("probe").requests += 1
    return len(client.payload or b"")
