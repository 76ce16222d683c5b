"""``remote-steer plan``: what a spec will cost, per model; offline-safe."""

from __future__ import annotations

from pathlib import Path

import typer

from remote_steer.cli.app import command


@command(short_help="Show what a spec will cost, per model; offline-safe.")
def plan(
    spec: Path = typer.Argument(..., help="Experiment spec (TOML), e.g. experiments/qwen3_family.toml."),
    check_hosts: bool = typer.Option(
        False, "--check-hosts", help="Ask each remote host (its open /status) whether it serves the model."
    ),
) -> None:
    """Print, per model, what SPEC will cost: backend, engine, host, requests, forward
    passes and estimated bytes each way. Makes no network call unless --check-hosts."""
    from remote_steer.display import RichDisplay
    from remote_steer.run.plan_tables import PlanTable, plan_parts
    from remote_steer.run.spec import load_spec

    display = RichDisplay()
    for part in plan_parts(load_spec(spec), str(spec), check_hosts=check_hosts):
        if isinstance(part, PlanTable):
            display.table(part.title, part.columns, part.rows, part.caption)
        else:
            display.note(part)
