"""What an NDIF server says about itself on its open endpoints (``/status``, ``/env``).

NDIF's ``/status`` (ndif 0.1.x, served from a Redis cache refreshed about once a
minute) lists three kinds of entry under ``deployments``:

- a deployed replica, keyed ``<replica>:ModelActor:<model_key>``, with
  ``application_state`` RUNNING, DEPLOYING or UNHEALTHY and ``deployment_level`` HOT
  (on a GPU) or WARM (parked in CPU memory); its ``repo_id`` may be missing, so the
  repo id is read from the model key's JSON when it is;
- a WARM cache entry of the same shape;
- every model in the server's Hugging Face cache that is not deployed, keyed by repo
  id with ``deployment_level`` COLD and nothing else: on disk, not loaded. A request
  for it deploys it on demand with the server's defaults (bfloat16 unless configured).

Only a RUNNING replica is *hosted*. Nothing here sends a key.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from typing import Any

from remote_steer.errors import ModelError, RemoteSteerError

#: The one line said of a model the server has on disk but not loaded.
COLD_NOTE = "not loaded: the first request deploys it with the server's defaults"


class RemoteUnavailable(RemoteSteerError):
    """The server could not be reached, or kept failing, after bounded retries."""


@dataclass(frozen=True)
class Hosting:
    """One model as the server's ``/status`` describes it."""

    repo_id: str
    state: str  # RUNNING, DEPLOYING, UNHEALTHY, WARM, COLD (or the server's own word)

    @property
    def hosted(self) -> bool:
        return self.state == "RUNNING"

    @property
    def cold(self) -> bool:
        return self.state == "COLD"

    def describe(self) -> str:
        if self.cold:
            return f"COLD ({COLD_NOTE})"
        return self.state


_RANK = {"RUNNING": 0, "DEPLOYING": 1, "WARM": 2, "UNHEALTHY": 3, "COLD": 4}


def _repo_from_key(model_key: str | None) -> str | None:
    """``nnsight.modeling...:{"repo_id": ..., ...}`` → the repo id."""
    if not model_key or "{" not in model_key:
        return None
    try:
        data = json.loads(model_key[model_key.index("{") :])
    except ValueError:
        return None
    repo = data.get("repo_id") if isinstance(data, dict) else None
    return repo if isinstance(repo, str) else None


def parse_status(payload: dict[str, Any]) -> dict[str, Hosting]:
    """repo id → its best ``Hosting`` (a RUNNING replica beats a COLD shadow of itself)."""
    out: dict[str, Hosting] = {}
    for name, entry in (payload.get("deployments") or {}).items():
        if not isinstance(entry, dict):
            continue
        key = entry.get("model_key") or (name.split(":ModelActor:", 1)[1] if ":ModelActor:" in name else None)
        repo = entry.get("repo_id") or _repo_from_key(key) or name
        level = entry.get("deployment_level")
        state = entry.get("application_state") or level or "UNKNOWN"
        if level in ("WARM", "COLD") and state not in ("DEPLOYING", "UNHEALTHY"):
            state = level
        found = Hosting(str(repo), str(state))
        best = out.get(found.repo_id)
        if best is None or _RANK.get(found.state, 9) < _RANK.get(best.state, 9):
            out[found.repo_id] = found
    return out


def _status_code(error: BaseException) -> int | None:
    for candidate in (error, error.__cause__, error.__context__):
        response = getattr(candidate, "response", None)
        code = getattr(response, "status_code", None)
        if isinstance(code, int):
            return code
    return None


def get_open(host: str, path: str, timeout_s: float):
    """GET an open endpoint (NDIF checks no key on /status, /env, /ping)."""
    import httpx

    try:
        response = httpx.get(f"{host}{path}", timeout=timeout_s)
        response.raise_for_status()
    except Exception as error:  # noqa: BLE001 - every failure becomes one line
        code = _status_code(error)
        what = f"HTTP {code}" if code is not None else f"{type(error).__name__}: {error}"
        raise RemoteUnavailable(f"{host}: cannot read {path} ({what})") from None
    return response


def server_models(host: str, timeout_s: float = 5.0) -> dict[str, Hosting]:
    """Every model the server's open ``/status`` mentions, deployed or on disk."""
    return parse_status(get_open(host, "/status", timeout_s).json())


def hosted_models(host: str, timeout_s: float = 5.0) -> dict[str, str]:
    """repo id → state, as ``server_models`` (kept for callers that want plain strings)."""
    return {repo: hosting.state for repo, hosting in server_models(host, timeout_s).items()}


def server_versions(host: str, timeout_s: float = 5.0) -> dict[str, str] | None:
    """python and nnsight versions from the server's ``/env``, or None where it has none."""
    try:
        env = get_open(host, "/env", timeout_s).json()
    except (RemoteUnavailable, ValueError):
        return None
    packages = env.get("packages") or {}
    return {"python": str(env.get("python_version", "?")).split()[0], "nnsight": str(packages.get("nnsight", "?"))}


def closest_served(remote_id: str, models: dict[str, Hosting], n: int = 3) -> list[str]:
    """The served repo ids whose names are closest to ``remote_id``, best first: the longest
    common start (same organisation, family and size), then the most similar overall."""
    import os

    wanted = remote_id.lower()

    def score(name: str) -> tuple[int, float]:
        name = name.lower()
        return len(os.path.commonprefix([wanted, name])), difflib.SequenceMatcher(None, wanted, name).ratio()

    ranked = sorted(models, key=score, reverse=True)
    return [name for name in ranked if score(name)[1] >= 0.4][:n]


def not_served_line(host: str, remote_id: str, model_name: str, models: dict[str, Hosting]) -> str:
    """One line: the model is not served; the closest served names (with their state)."""
    shown = model_name if model_name == remote_id else f"{model_name!r} ({remote_id})"
    closest = closest_served(remote_id, models)
    if closest:
        also = ", ".join(f"{name} ({models[name].state})" for name in closest)
        hint = f"closest served: {also} ({len(models)} in all)"
    else:
        hint = "it serves no model" if not models else f"it serves {len(models)} models, none with a close name"
    return f"model {shown} is not served by {host}; {hint}"


#: Bytes a second a server reads weights from its own disk, for the cold-start estimate.
_LOAD_BYTES_PER_S = 1e9


def cold_line(model_name: str, host: str, params_b: float | None = None) -> str:
    """One line: the model is on the server's disk, not loaded; the first request deploys it
    and roughly how long that takes (NDIF's /status gives no time for a COLD model: the
    estimate is its bf16 weights read at about 1 GB/s, plus start-up)."""
    line = f"{model_name} on {host}: {COLD_NOTE}"
    if params_b is None:
        return line + " (the server does not say how long that takes)"
    seconds = 2 * params_b * 1e9 / _LOAD_BYTES_PER_S + 30
    when = f"{math.ceil(seconds / 60)} min" if seconds >= 90 else f"{seconds:.0f} s"
    return line + f", roughly {when} for {2 * params_b:.0f} GB of weights (the server does not say)"


def require_hosted(host: str, remote_id: str, model_name: str) -> Hosting:
    """The model's hosting; raises ``ModelError`` when the server does not know it at all.

    A COLD model passes (a request deploys it); the caller says ``cold_line``."""
    models = server_models(host)
    found = models.get(remote_id)
    if found is None:
        raise ModelError(
            not_served_line(host, remote_id, model_name, models)
            + '; run it with backend = "local" or choose a served model'
        )
    return found


def client_versions() -> dict[str, str]:
    import platform
    from importlib import metadata

    return {"python": platform.python_version(), "nnsight": metadata.version("nnsight")}


def skew_line(host: str, client: dict[str, str], server: dict[str, str]) -> str | None:
    """One line when the client's nnsight is older than the server's, or the Python minor
    versions differ (the server deserialises what the client serialises); None when they agree."""
    from packaging.version import InvalidVersion, Version

    problems = []
    try:
        if Version(client["nnsight"]) < Version(server["nnsight"]):
            problems.append(f"your nnsight {client['nnsight']} is older than the server's {server['nnsight']}")
    except InvalidVersion:
        pass
    minor = ".".join(server["python"].split(".")[:2])
    if client["python"].split(".")[:2] != server["python"].split(".")[:2]:
        problems.append(f"your Python {client['python']} is not the server's {minor}")
    if not problems:
        return None
    return (
        f"{host}: {'; '.join(problems)}: jobs may fail to load there "
        f"(install nnsight=={server['nnsight']} under Python {minor})"
    )


def version_skew(host: str, timeout_s: float = 5.0) -> str | None:
    """``skew_line`` against the server's open ``/env`` (read once); None where it does not say."""
    server = server_versions(host, timeout_s)
    return None if server is None else skew_line(host, client_versions(), server)
