"""The run directory: manifest, vectors, checkpointed result parts and derived tables.

Layout (see README "Run directory")::

    <run>/manifest.json                     spec, versions, model revisions, seed, git commit, status
    <run>/vectors/<model>/<concept>.safetensors
    <run>/parts/logit_diff/<model>/<concept>/items-00000.parquet   the log: one file per finished chunk
    <run>/results/logit_diff.parquet        derived: all parts, one row per item × model × dataset × layer × strength
    <run>/results/summary.csv               derived: best layer and Glass's delta per model × dataset

Every file is written to a temporary name in the same directory and renamed into
place, so an interrupted run leaves only whole files; a rerun skips what exists.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from remote_steer.errors import SpecError, filesystem_errors

_PACKAGES = (
    "remote-steer",
    "torch",
    "transformers",
    "nnsight",
    "tokenizers",
    "numpy",
    "pandas",
    "pyarrow",
    "safetensors",
)


def slug(name: str) -> str:
    """A model or concept name as a single path component (``toy/qwen3`` → ``toy--qwen3``)."""
    return name.replace("/", "--").replace("\\", "--").replace(":", "-")


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def share(path: Path) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would under the user's umask
    (0644 files, 0755 directories under umask 022): ``mkstemp``, ``mkdtemp`` and
    safetensors create them private (0600, 0700)."""
    mode = 0o777 if path.is_dir() else 0o666
    os.chmod(path, mode & ~_umask())


def share_tree(root: Path) -> None:
    """``share`` on ``root`` and everything under it."""
    share(root)
    for below in root.rglob("*"):
        if not below.is_symlink():
            share(below)


def writable_dir(path: Path, what: str) -> None:
    """Create ``path`` (and its parents) and check a file can be made in it, before any
    work whose results go there; a one-line ``FilesystemError`` naming it otherwise."""
    with filesystem_errors(f"write {what} there"):
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` (its return value is ignored) then rename ``tmp`` onto ``path``; never leaves a partial file.

    The file gets the user's usual mode (``share``). A filesystem failure (read-only,
    disk full, a parent that is a file) is a one-line ``FilesystemError`` naming the path.
    """
    with filesystem_errors("write"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            write(tmp)
            share(tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def changed_fields(new: Any, old: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ (``evaluation.strengths``), with the old
    and new value when short, for the changed-spec refusal."""
    new, old = json.loads(json.dumps(new, default=str)), json.loads(json.dumps(old, default=str))
    if isinstance(new, dict) and isinstance(old, dict):
        out = []
        for key in sorted(set(new) | set(old)):
            out += changed_fields(new.get(key), old.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    if new == old:
        return []
    shown = f"{json.dumps(old)} → {json.dumps(new)}"
    return [f"{prefix} ({shown})" if len(shown) <= 60 else prefix]


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"))


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str:
    """The commit of the remote-steer checkout that ran, with ``+dirty`` for local edits."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return commit + ("+dirty" if dirty else "")


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def vector_path(self, model: str, concept: str) -> Path:
        return self.root / "vectors" / slug(model) / f"{slug(concept)}.safetensors"

    def part_dir(self, table: str, model: str, concept: str) -> Path:
        return self.root / "parts" / table / slug(model) / slug(concept)

    def part_path(self, table: str, model: str, concept: str, first_item: int, extension: int = 0) -> Path:
        """A chunk's part; ``extension`` n > 0: the n-th part added when the run was extended."""
        suffix = f".x{extension}" if extension else ""
        return self.part_dir(table, model, concept) / f"items-{first_item:05d}{suffix}.parquet"

    def results_path(self, table: str) -> Path:
        return self.root / "results" / f"{table}.parquet"

    # -- manifest ------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        return json.loads(self.manifest_path.read_text())

    def open_run(self, spec: dict[str, Any], seed: int, extra: dict[str, Any]) -> bool:
        """Create the manifest, or check an existing run is the same spec. True if resuming."""
        existing = self.read_manifest()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        if existing is not None:
            if existing.get("spec") != json.loads(json.dumps(spec, default=str)):
                changed = changed_fields(spec, existing.get("spec", {}))
                raise SpecError(
                    f"{self.root}: holds a run of a different spec (changed: {', '.join(changed)}); "
                    "use another run name (--name) or --fresh to start over"
                )
            existing.update(status="running", resumed_at=now, **extra)
            write_json(self.manifest_path, existing)
            return True
        manifest = {
            "tool": "remote-steer",
            "created_at": now,
            "status": "running",
            "seed": seed,
            "git_commit": git_commit(),
            "versions": package_versions(),
            "spec": spec,
            **extra,
        }
        write_json(self.manifest_path, manifest)
        return False

    def update_manifest(self, **fields: Any) -> None:
        manifest = self.read_manifest() or {}
        manifest.update(fields)
        manifest["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        write_json(self.manifest_path, manifest)

    # -- result parts --------------------------------------------------------

    def write_part(
        self, table: str, model: str, concept: str, first_item: int, frame: pd.DataFrame, extension: int = 0
    ) -> None:
        write_parquet(self.part_path(table, model, concept, first_item, extension), frame)

    def has_part(self, table: str, model: str, concept: str, first_item: int) -> bool:
        return self.part_path(table, model, concept, first_item).exists()

    def consolidate(self, table: str) -> pd.DataFrame:
        """Rebuild ``results/<table>.parquet`` from the parts (the parts are the record)."""
        parts = sorted((self.root / "parts" / table).glob("*/*/items-*.parquet"))
        frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else pd.DataFrame()
        write_parquet(self.results_path(table), frame)
        return frame
