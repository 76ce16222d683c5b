"""``remote-steer report``: tables and figures from saved runs."""

from __future__ import annotations

from pathlib import Path

import typer

from remote_steer.cli.app import command


@command(short_help="Build tables and figures from saved runs.")
def report(
    run_dirs: list[Path] = typer.Argument(
        ..., help="One or more run directories (each with results/logit_diff.parquet)."
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Where report.md, figures/ and tables/ go. Default: RUN_DIR/report for one run; "
        "outputs/report-<UTC timestamp> for several.",
    ),
    n_boot: int = typer.Option(1000, "--n-boot", min=1, help="Bootstrap resamples per model × dataset."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    no_figures: bool = typer.Option(False, "--no-figures", help="Write the tables only (faster)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Write the report without printing tables."),
) -> None:
    """Rebuild the study's tables and figures from saved results; loads no model.

    Several run directories (say one local, one remote) merge into one report: rows
    are concatenated, and a (model, dataset, item, layer, strength) that two runs
    both hold is taken from the first run listed (report.md notes it).
    """
    from remote_steer.display import RichDisplay
    from remote_steer.report.build import build_report

    written = build_report(run_dirs, output, n_boot=n_boot, seed=seed, figures=not no_figures)
    if not quiet:
        display = RichDisplay()
        for table in (t for t in written.tables if t.main):
            # an interval on its own line keeps the columns narrow enough for an 80-column terminal
            frame = table.terminal if table.terminal is not None else table.frame
            rows = [[str(v).replace(" [", "\n[") for v in row] for row in frame.to_numpy().tolist()]
            display.table(table.title, list(frame.columns), rows, table.caption)
        if "permutation" in written.texts:
            display.note(written.texts["permutation"])
        for note in written.notes:
            display.note(f"note: {note}")
        for figure in written.figures:
            if figure.skipped:
                display.note(f"figure left out: {figure.title} ({figure.skipped})")
    drawn = sum(1 for f in written.figures if not f.skipped)
    typer.echo(
        f"report: {written.path}\n  ({len(written.tables)} tables, {drawn} figures in {written.out_dir / 'figures'})"
    )
