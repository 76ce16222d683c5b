"""Errors a researcher sees: one line that names the bad input and what was expected."""

from __future__ import annotations


class RemoteSteerError(Exception):
    """Base class. The CLI prints ``str(error)`` on one line and exits non-zero."""


class SpecError(RemoteSteerError):
    """An experiment spec field is missing, misspelt or out of range."""


class DataError(RemoteSteerError):
    """A dataset file is missing or malformed, or an item cannot be used."""


class ModelError(RemoteSteerError):
    """A model cannot be found, loaded or used as asked."""
