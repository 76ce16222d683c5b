"""NDIF transport: nnsight's own remote client, made durable and accountable.

``NdifClient`` extends nnsight's ``RemoteBackend`` (the code that speaks NDIF's
protocol) with what a long sweep needs: bounded retries on transient failures,
byte accounting, and error messages that say what to do. ``RemoteRequest`` submits
one job without blocking, journals its id in the run directory *before* waiting,
and polls; a rerun finds the journal and polls the same job instead of submitting
it again. Nothing here draws: job states go to ``Backend.on_status``.

The API key is sent only as nnsight's ``ndif-api-key`` header; every message that
leaves this module is passed through ``redact``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from remote_steer.remote.backend import Backend, Request
from remote_steer.errors import ModelError, RemoteSteerError
from remote_steer.run.store import slug, write_json

if TYPE_CHECKING:
    from remote_steer.models.loading import LoadedModel


class RemoteJobError(RemoteSteerError):
    """The server ran the job and it failed; the message carries the remote traceback."""


class RemoteAuthError(RemoteSteerError):
    """The server refused the API key."""


class RemoteUnavailable(RemoteSteerError):
    """The server could not be reached, or kept failing, after bounded retries."""


_AUTH_HINT = (
    "set NDIF_API_KEY in the environment (or save it once with "
    "`python -c \"import nnsight; nnsight.CONFIG.set_default_api_key('KEY')\"`)"
)


def redact(text: str, key: str | None) -> str:
    return text.replace(key, "***") if key else text


def _status_code(error: BaseException) -> int | None:
    for candidate in (error, error.__cause__, error.__context__):
        response = getattr(candidate, "response", None)
        code = getattr(response, "status_code", None)
        if isinstance(code, int):
            return code
    return None


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


def _nnsight_remote_backend():
    from nnsight.intervention.backends.remote import RemoteBackend

    return RemoteBackend


class NdifClient(_nnsight_remote_backend()):
    """nnsight's RemoteBackend in non-blocking mode, with retries and accounting."""

    def __init__(self, backend: Backend, stage: str, model_key: str, env: dict, job_id: str | None = None) -> None:
        super().__init__(model_key, host=backend.host, api_key=backend.api_key or "", env=env, blocking=False, job_id=job_id)
        self.display.enabled = False  # our own display shows job states
        self._backend, self._stage = backend, stage

    @property
    def traffic(self):
        return self._backend.stage_traffic(self._stage)

    def _retrying(self, call, what: str):
        delays = self._backend.retry.delays()
        while True:
            try:
                return call()
            except Exception as error:  # noqa: BLE001 - classified below
                code = _status_code(error)
                if code in (401, 403):
                    raise RemoteAuthError(
                        f"{self.host} refused the API key (HTTP {code}) while trying to {what}; {_AUTH_HINT}"
                    ) from None
                if not _transient(error):
                    raise
                delay = next(delays, None)
                if delay is None:
                    message = redact(f"{type(error).__name__}: {error}", self.api_key)
                    raise RemoteUnavailable(
                        f"{self.host}: could not {what} after {self._backend.retry.attempts} attempts ({message})"
                    ) from None
                self.traffic.retries += 1
                time.sleep(delay)

    def _serialize(self, tracer):
        blob = super()._serialize(tracer)
        self.traffic.bytes_sent += len(blob)
        return blob

    def _post(self, request, blob):
        return self._retrying(lambda: super(NdifClient, self)._post(request, blob), "submit a job")

    def finalize(self, content: bytes):
        self.traffic.bytes_received += len(content)
        return super().finalize(content)

    def poll(self, tracer=None):
        return self._retrying(lambda: super(NdifClient, self).poll(tracer), f"poll job {self.job_id}")


class RemoteRequest(Request):
    """One NDIF job: submit (or resume by journaled id), then poll to completion."""

    def __init__(self, backend: Backend, model: "LoadedModel", stage: str, key: str | None) -> None:
        self.backend, self.model, self.stage, self.key = backend, model, stage, key
        self.journal = None if backend.journal_dir is None or key is None else backend.journal_dir / f"{slug(key)}.json"
        known = self._read_journal()
        self.client = NdifClient(backend, stage, model.nn.to_model_key(), model.nn._remoteable_get_env(), known)
        self.must_submit = known is None
        self.submitted_at = time.perf_counter()

    def _read_journal(self) -> str | None:
        if self.journal is None or not self.journal.exists():
            return None
        entry = json.loads(self.journal.read_text())
        if entry.get("host") != self.backend.host or entry.get("state") == "failed":
            return None
        return entry["job_id"]

    def _write_journal(self, state: str) -> None:
        if self.journal is not None:
            write_json(
                self.journal,
                {"job_id": self.client.job_id, "host": self.backend.host, "stage": self.stage, "key": self.key, "state": state},
            )

    def session_kwargs(self) -> dict[str, Any]:
        return {"backend": self.client}

    def result(self, **local_values: Any) -> dict[str, Any]:
        client, backend = self.client, self.backend
        if self.must_submit:
            if client.job_id is None:
                raise RemoteUnavailable(f"{backend.host}: the job for {self.key or self.stage} was not submitted")
            backend.stage_traffic(self.stage).requests += 1
            self._write_journal("submitted")  # before waiting: a rerun resumes this job
        deadline = time.monotonic() + backend.retry.job_timeout_s
        last = None
        from nnsight.intervention.backends.remote import RemoteError

        while True:
            try:
                saves = client.poll()
            except RemoteError as error:
                self._write_journal("failed")
                raise RemoteJobError(
                    redact(f"remote job {client.job_id} ({self.key or self.stage}) failed on {backend.host}:\n{error}", backend.api_key)
                ) from None
            state = client.status.value if client.status is not None else "SUBMITTED"
            if state != last and backend.on_status is not None:
                backend.on_status(self.stage, state)
            last = state
            if saves is not None:
                break
            if time.monotonic() > deadline:
                raise RemoteUnavailable(f"{backend.host}: job {client.job_id} did not finish within {backend.retry.job_timeout_s:.0f}s; rerun to keep waiting")
            time.sleep(backend.retry.poll_interval_s)
        backend.stage_traffic(self.stage).server_seconds += time.perf_counter() - self.submitted_at
        self._write_journal("completed")
        return saves


def hosted_models(host: str, api_key: str | None, timeout_s: float = 5.0) -> dict[str, str]:
    """repo id → state for the models the server hosts (its ``/status``)."""
    import httpx

    headers = {"ndif-api-key": api_key} if api_key else None
    try:
        response = httpx.get(f"{host}/status", headers=headers, timeout=timeout_s)
        response.raise_for_status()
    except Exception as error:  # noqa: BLE001
        code = _status_code(error)
        if code in (401, 403):
            raise RemoteAuthError(f"{host} refused the API key (HTTP {code}); {_AUTH_HINT}") from None
        raise RemoteUnavailable(redact(f"{host}: cannot read /status ({type(error).__name__}: {error})", api_key)) from None
    deployments = response.json().get("deployments", {})
    return {
        value.get("repo_id", name): value.get("application_state", "UNKNOWN")
        for name, value in deployments.items()
    }


def require_hosted(host: str, api_key: str | None, remote_id: str, model_name: str) -> None:
    hosted = hosted_models(host, api_key)
    if remote_id not in hosted:
        listed = ", ".join(sorted(hosted)) or "none"
        raise ModelError(
            f"model {model_name!r} ({remote_id}) is not hosted on {host} (hosted: {listed}); "
            'run it with backend = "local" or choose a hosted model'
        )


def journal_dir(run_dir: Path) -> Path:
    return run_dir / "jobs"
