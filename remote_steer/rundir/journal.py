"""The job journal: ``jobs/<key>.json`` per remote job, the payload beside it.

An entry holds every attempt at one job (``key``, ``stage``, ``model``, ``host``,
``attempts``: each with ``job_id``, ``state`` submitted|completed|failed|lost|expired|
evicted, bytes, retries, timings, and the server's ``runtime``); ``jobs/<key>.payload``
holds the latest submission until the job completes. The transport
(``remote/ndif.py``) decides what goes in; this module owns the files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from remote_steer.rundir.files import atomic_write, slug, write_json

JOURNAL_VERSION = 2


def job_path(jobs_dir: Path, key: str) -> Path:
    return Path(jobs_dir) / f"{slug(key)}.json"


def payload_path(jobs_dir: Path, key: str) -> Path:
    return Path(jobs_dir) / f"{slug(key)}.payload"


def empty_entry(key: str | None, stage: str, model: str, host: str | None) -> dict[str, Any]:
    return {"version": JOURNAL_VERSION, "key": key, "stage": stage, "model": model, "host": host, "attempts": []}


def read_job(path: Path, empty: dict[str, Any]) -> dict[str, Any]:
    """The entry at ``path`` (``empty`` if none). An entry of an earlier version is
    migrated; a damaged one is set aside (``*.damaged``) and ``empty`` returned, so the
    job is sent again rather than the run stopping."""
    if not path.exists():
        return empty
    try:
        entry = json.loads(path.read_text())
        if not isinstance(entry, dict):
            raise ValueError("not an object")
        if "attempts" not in entry:  # version 1: one job id, no attempts
            entry = {**empty, "attempts": [{"job_id": entry["job_id"], "state": entry.get("state", "submitted")}]}
        if not isinstance(entry["attempts"], list):
            raise ValueError("attempts is not a list")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        set_aside(path)
        return empty
    entry.setdefault("version", JOURNAL_VERSION)
    return entry


def set_aside(path: Path) -> Path:
    """Rename a damaged file to ``<name>.damaged`` (kept for a look, never read again)."""
    target = path.with_name(path.name + ".damaged")
    path.replace(target)
    return target


def write_job(path: Path, entry: dict[str, Any]) -> None:
    write_json(path, entry)


def write_payload(path: Path, blob: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(blob))


def entries(jobs_dir: Path) -> Iterator[dict[str, Any]]:
    """Every readable entry (a damaged one is skipped)."""
    folder = Path(jobs_dir)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict):
            yield entry


def job_ids(jobs_dir: Path, key: str) -> list[str]:
    """The ids of every attempt journaled under ``key`` (empty if none)."""
    path = job_path(jobs_dir, key)
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    attempts = entry.get("attempts", []) if isinstance(entry, dict) else []
    return [str(a["job_id"]) for a in attempts if isinstance(a, dict) and a.get("job_id")]
