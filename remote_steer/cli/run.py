"""``remote-steer run``: extract vectors and sweep a spec; Ctrl-C says how to resume."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from remote_steer.cli.app import command

if TYPE_CHECKING:
    from remote_steer.run.spec import Overrides


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
    threads: int | None = typer.Option(
        None,
        "--threads",
        help="torch CPU threads for local runs (default: the CPUs free; OMP_NUM_THREADS/MKL_NUM_THREADS win).",
    ),
    allow_large_strengths: bool = typer.Option(
        False,
        "--allow-large-strengths",
        help="Run strengths whose added vector exceeds 10× the residual norm (refused otherwise).",
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

    options: Overrides = {
        "name": name,
        "output_dir": str(output_dir) if output_dir else None,
        "modes": modes,
        "backend": backend,
        "host": host,
        "engine": engine,
        "threads": threads,
        "allow_large_strengths": allow_large_strengths,
    }
    try:
        experiment = apply_overrides(load_spec(spec), **options)
        display = NullDisplay() if quiet else RichDisplay()
        outcome = run_experiment(experiment, display=display, fresh=fresh)
    except KeyboardInterrupt:
        resume = resume_command(spec, options)
        hint = " (without --fresh, which would delete them)" if fresh else ""
        typer.echo(f"interrupted: finished chunks are saved; resume with{hint}:\n  {resume}", err=True)
        raise typer.Exit(code=130) from None
    typer.echo(
        f"done in {outcome.seconds:.1f}s: {outcome.computed_parts} chunks computed, "
        f"{outcome.skipped_parts} already done → {outcome.run_dir}"
    )
    if outcome.slow:  # 80 columns, piped or not
        import textwrap

        typer.echo(textwrap.fill(f"slow: {outcome.slow}", 80, subsequent_indent="  "))
    if not quiet:
        typer.echo(f"next: remote-steer report {shlex.quote(str(outcome.run_dir))}")


def resume_command(spec: Path, options: Overrides) -> str:
    """The command that resumes an interrupted run: the same options, never --fresh
    (which would delete the chunks already saved)."""
    import shlex

    parts = ["remote-steer", "run", str(spec)]
    for key in ("name", "output_dir", "backend", "host", "modes", "engine", "threads"):
        value = options.get(key)
        if value:
            parts += ["--" + key.replace("_", "-"), str(value)]
    if options.get("allow_large_strengths"):
        parts.append("--allow-large-strengths")
    return " ".join(shlex.quote(p) for p in parts)
