"""Atomic, permission-correct writes, and the record of what ran (versions, commit).

Every file is written to a temporary name in its own directory and renamed into
place, so an interrupted write leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from remote_steer.errors import filesystem_errors

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


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"))


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    """Parquet with a checksum on every page, so that damage inside the data (not only a
    cut file or a broken footer) is found when read (``read_parquet``)."""
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False, write_page_checksum=True))


def read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet file, its page checksums verified (files written without them read as usual)."""
    return pd.read_parquet(path, page_checksum_verification=True)


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


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
