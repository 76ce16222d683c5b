"""The command line, ``remote-steer``: one module per command or group of commands.

Each module registers its commands on ``app.app``; importing them here, in this order,
sets the order ``--help`` lists them in (hence unsorted).
"""

from __future__ import annotations

# isort: off
from remote_steer.cli.app import app
from remote_steer.cli import run, plan, check_remote, catalog, report, bench, generate, export  # noqa: F401 - registers them
# isort: on

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry
    app()
