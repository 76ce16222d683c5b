"""``remote-steer check-remote``: first contact with a remote host."""

from __future__ import annotations

import typer

from remote_steer.cli.app import command, fail
from remote_steer.errors import RemoteSteerError


@command("check-remote", short_help="Try a remote host: reachable, hosted, key, one tiny trace.")
def check_remote(
    host: str | None = typer.Option(
        None, "--host", help="Server URL (default: $NDIF_HOST, then nnsight's configured host)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Model to try (default: the first registry model the host serves)."
    ),
    engine: str = typer.Option("fast", "--engine", help='"fast" or "plain": the engine the tiny trace uses.'),
) -> None:
    """First contact with a remote host, before a long run: is it reachable, does it
    host the model, which nnsight and python it runs, does it take the API key, and one
    tiny trace (one item, baseline and one steered configuration) with its round-trip
    time and bytes. Each failure is one line saying what to do; exit code 2."""
    from remote_steer.run.check_remote import check_remote as run_checks
    from remote_steer.run.spec import ENGINES, either

    if engine not in ENGINES:
        fail(RemoteSteerError(f"--engine {engine!r}: expected {either(ENGINES)}"))
    failed = False
    for step in run_checks(host, model, engine):
        typer.echo(f"{'ok  ' if step.ok else 'FAIL'} {step.name}: {step.detail}")
        failed = failed or not step.ok
    if failed:
        raise typer.Exit(code=2)
