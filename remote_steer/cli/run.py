"""``remote-steer run``: extract vectors and sweep a spec; Ctrl-C says how to resume."""

from __future__ import annotations

from pathlib import Path

import typer

from remote_steer.cli.app import command


@command(short_help="Extract vectors and sweep layers × strengths for a spec.")
def run(  # noqa: PLR0913 - typer: one parameter per command-line option
    spec: Path = typer.Argument(..., help="Experiment spec (TOML), e.g. experiments/quickstart.toml."),
    name: str | None = typer.Option(None, "--name", help="Run name (directory under the spec's output_dir)."),
    output_dir: Path | None = typer.Option(None, "--output-dir", help="Override the spec's output_dir."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete an existing run directory of this name first."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or tables."),
    backend: str | None = typer.Option(
        None, "--backend", help='Run every model on this backend: "local", "remote" (NDIF) or "simulated-remote".'
    ),
    host: str | None = typer.Option(None, "--host", help="Remote server URL (default: spec, then $NDIF_HOST)."),
    modes: str | None = typer.Option(
        None, "--modes", help='Evaluation modes, comma-separated: "logit", "generation" (default: the spec\'s).'
    ),
    engine: str | None = typer.Option(
        None,
        "--engine",
        help='Engine for every model: "fast" (default) or "plain" (for a host that refuses registered code).',
    ),
) -> None:
    """Extract CAA vectors and run the layer × strength logit-diff sweep of SPEC
    (and, with the generation mode, the steered model's free answers).

    Results land in OUTPUT_DIR/NAME. Rerunning an interrupted run resumes it and
    recomputes nothing that finished.
    """
    import shlex

    if not quiet:  # the libraries below take seconds to import: say something first
        typer.echo(f"remote-steer: preparing {spec} …", err=True)
    from remote_steer.display import NullDisplay, RichDisplay
    from remote_steer.run.runner import run_experiment
    from remote_steer.run.spec import apply_overrides, load_spec

    try:
        experiment = apply_overrides(
            load_spec(spec),
            name=name,
            output_dir=str(output_dir) if output_dir else None,
            modes=modes,
            backend=backend,
            host=host,
            engine=engine,
        )
        display = NullDisplay() if quiet else RichDisplay()
        outcome = run_experiment(experiment, display=display, fresh=fresh)
    except KeyboardInterrupt:
        resume = resume_command(spec, name, output_dir, backend, host, modes, engine)
        hint = " (without --fresh, which would delete them)" if fresh else ""
        typer.echo(f"interrupted: finished chunks are saved; resume with{hint}:\n  {resume}", err=True)
        raise typer.Exit(code=130) from None
    typer.echo(
        f"done in {outcome.seconds:.1f}s: {outcome.computed_parts} chunks computed, "
        f"{outcome.skipped_parts} already done → {outcome.run_dir}"
    )
    if not quiet:
        typer.echo(f"next: remote-steer report {shlex.quote(str(outcome.run_dir))}")


def resume_command(spec, name, output_dir, backend, host, modes, engine=None) -> str:
    """The command that resumes an interrupted run: the same options, never --fresh
    (which would delete the chunks already saved)."""
    import shlex

    parts = ["remote-steer", "run", str(spec)]
    for flag, value in (
        ("--name", name),
        ("--output-dir", output_dir),
        ("--backend", backend),
        ("--host", host),
        ("--modes", modes),
        ("--engine", engine),
    ):
        if value:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)
