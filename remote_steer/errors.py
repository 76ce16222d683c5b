"""Errors a researcher sees: one line that names the bad input and what was expected."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class RemoteSteerError(Exception):
    """Base class. The CLI prints ``str(error)`` on one line and exits non-zero."""


class SpecError(RemoteSteerError):
    """An experiment spec field is missing, misspelt or out of range."""


class DataError(RemoteSteerError):
    """A dataset file is missing or malformed, or an item cannot be used."""


class ModelError(RemoteSteerError):
    """A model cannot be found, loaded or used as asked."""


class FilesystemError(RemoteSteerError, OSError):
    """A file or directory cannot be written (read-only, disk full, a missing or
    non-directory parent). Still an ``OSError``, so cleanup handlers keep working."""


def filesystem_error(error: OSError, doing: str) -> FilesystemError:
    """``error`` as one line: the path, what could not be done and the system's reason."""
    if isinstance(error, FilesystemError):
        return error
    path = error.filename if error.filename is not None else ""
    reason = error.strerror or type(error).__name__
    return FilesystemError(f"{path}{': ' if path else ''}cannot {doing} ({reason})")


@contextmanager
def filesystem_errors(doing: str) -> Iterator[None]:
    """Turn an ``OSError`` raised inside into a one-line ``FilesystemError``."""
    try:
        yield
    except OSError as error:
        raise filesystem_error(error, doing) from None
