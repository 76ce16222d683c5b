"""The ``remote-steer`` command line. Thin: it parses options and wires the stages."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import RemoteSteerError

app = typer.Typer(
    help="Contrastive Activation Addition steering sweeps on open models, locally or on NDIF.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(error: RemoteSteerError) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=2)


@app.command()
def run(
    spec: Path = typer.Argument(..., help="Experiment spec (TOML), e.g. experiments/quickstart.toml."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (directory under the spec's output_dir)."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="Override the spec's output_dir."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete an existing run directory of this name first."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or tables."),
) -> None:
    """Extract CAA vectors and run the layer × strength logit-diff sweep of SPEC.

    Results land in OUTPUT_DIR/NAME. Rerunning an interrupted run resumes it and
    recomputes nothing that finished.
    """
    import dataclasses

    from .display import NullDisplay, RichDisplay
    from .runner import run_experiment
    from .spec import load_spec

    try:
        experiment = load_spec(spec)
        changes = {}
        if name:
            changes["name"] = name
        if output_dir:
            changes["output_dir"] = str(output_dir)
        experiment = dataclasses.replace(experiment, **changes)
        display = NullDisplay() if quiet else RichDisplay()
        outcome = run_experiment(experiment, display=display, fresh=fresh)
    except RemoteSteerError as error:
        _fail(error)
        return
    except KeyboardInterrupt:
        typer.echo("interrupted: finished chunks are saved; rerun the same command to resume", err=True)
        raise typer.Exit(code=130)
    typer.echo(
        f"done in {outcome.seconds:.1f}s: {outcome.computed_parts} chunks computed, "
        f"{outcome.skipped_parts} already done → {outcome.run_dir}"
    )


@app.command()
def models() -> None:
    """List the Qwen3 models of the study and the embedded random-weight toys."""
    from .display import RichDisplay
    from .registry import all_cards

    rows = [
        (
            c.name,
            "embedded (random-weight toy)" if c.toy else c.hub_id,
            c.n_layers,
            c.hidden_size,
            f"{c.n_heads}/{c.n_kv_heads}",
            f"{c.params_total_b:g}B" if not c.toy else f"{c.params_total_b * 1000:.0f}M",
            f"{c.params_active_b:g}B" if not c.toy else f"{c.params_active_b * 1000:.0f}M",
            c.kind,
            c.training,
            "yes" if c.tied_embeddings else "no",
            c.default_backend,
        )
        for c in all_cards()
    ]
    RichDisplay().table(
        "Models",
        ["model", "weights", "layers", "hidden", "heads q/kv", "params", "active", "type", "training", "tied emb.", "backend"],
        rows,
        "toy/* models have random weights from a fixed seed: for tests and the quickstart only.",
    )


@app.command()
def datasets(
    source: str = typer.Option("fixtures", "--source", help='"fixtures", "hub", or a local model-written-evals root.'),
) -> None:
    """List the study's concepts, the files behind them and whether SOURCE has them."""
    from .data import list_concepts
    from .display import RichDisplay

    try:
        entries = list_concepts(source)
    except RemoteSteerError as error:
        _fail(error)
        return
    rows = [
        (e["concept"], "\n".join(str(f) for f in e["files"]), "yes" if e["available"] else "no", e.get("n_lines", ""))
        for e in entries
    ]
    RichDisplay().table(f"Concepts in {source}", ["concept", "files", "available", "lines"], rows)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
