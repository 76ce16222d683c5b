"""The run record: one typed, versioned ``Manifest`` (``manifest.json``).

Schema 2 (this version) keeps the keys earlier versions wrote and adds
``schema_version``; ``Manifest.from_json`` migrates a manifest without one (schema 1,
written before the record was typed). Its ``models`` entries keep the ``backend`` and
``host`` they name, but these are only the latest session's (an earlier version overwrote them whenever the
run was opened with another backend: the parts' own provenance, from schema 2 on, is
what says where a number was computed).
Unknown keys are kept in ``extra`` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from remote_steer.errors import RemoteSteerError

SCHEMA_VERSION = 2


class RunDamaged(RemoteSteerError):
    """A file of the run directory cannot be read; the message names it and what to do."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Manifest:
    """Spec, seed, code and package versions, status, and what the run holds."""

    spec: dict[str, Any]
    seed: int | None = None
    git_commit: str = "unknown"
    versions: dict[str, str] = field(default_factory=dict)
    status: str = "running"  # running | interrupted | complete
    error: str | None = None
    created_at: str | None = None
    resumed_at: str | None = None
    updated_at: str | None = None
    seconds: float | None = None
    #: per model label: revision, location, layers, engine, dtype, device, backend and host
    #: of the latest session that computed for it (each part records its own provenance)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    traffic: dict[str, Any] = field(default_factory=dict)  # model → stage → remote traffic
    chunk_sizes: dict[str, int] = field(default_factory=dict)  # "table/model/concept" → items per part
    datasets: dict[str, Any] = field(default_factory=dict)  # concept → split report
    history: list[dict[str, Any]] = field(default_factory=list)  # created / extended, with changed fields
    tool: str = "remote-steer"
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept

    # -- JSON -------------------------------------------------------------------

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        """A manifest of any schema version (older ones migrated)."""
        if not isinstance(data, dict) or not isinstance(data.get("spec", {}), dict):
            raise ValueError("expected a JSON object with a spec object")
        data = migrate(dict(data))
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        return cls(**known, extra=extra)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out.update(self.extra)
        return json.loads(json.dumps(out, default=str))

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """``path`` read; a missing, truncated or corrupt file is one ``RunDamaged`` line."""
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise RunDamaged(f"{path}: no manifest; expected a run directory written by `remote-steer run`") from None
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            raise RunDamaged(
                f"{path}: damaged run record ({_reason(error)}); the parts are intact: move it aside and rerun "
                "`remote-steer run` with the same spec, or use another run name (--name)"
            ) from None

    # -- what the run holds ------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.spec.get("name", ""))

    @property
    def model_names(self) -> list[str]:
        return [str(m.get("name")) for m in self.spec.get("models", []) if isinstance(m, dict)]

    @property
    def concepts(self) -> list[str]:
        return [str(c) for c in self.spec.get("data", {}).get("concepts", [])]

    def model_spec(self, name: str) -> dict[str, Any]:
        """The spec entry of model ``name`` (by name or display name), or {}."""
        for m in self.spec.get("models", []):
            if isinstance(m, dict) and name in (m.get("name"), m.get("display_name")):
                return m
        return {}

    def where(self, name: str) -> tuple[str | None, str | None]:
        """(backend, host) the run recorded for model ``name``: what ``generate`` and
        ``chat`` use unless told otherwise."""
        info = self.models.get(name) or {}
        spec = self.model_spec(name)
        return info.get("backend") or spec.get("backend"), info.get("host") or spec.get("host")

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style read of a top-level key (``manifest.get("status")``), for callers
        written against the untyped record."""
        return self.to_json().get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:80]


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring an untyped (schema 1) manifest to schema 2."""
    version = int(data.get("schema_version", 1))
    if version > SCHEMA_VERSION:
        raise ValueError(f"schema_version {version} is newer than this remote-steer reads ({SCHEMA_VERSION})")
    if version == 1:
        data["schema_version"] = SCHEMA_VERSION
        data.setdefault("status", "unknown")
        data.setdefault("spec", {})
    return data
