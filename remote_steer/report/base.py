"""What both reports share: the results tables' columns, the report's parts, and
reading a run's tables. ``build`` (logit diff) and ``generation`` both import
from here, and neither imports the other at module level or inside functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from remote_steer.errors import DataError
from remote_steer.models.registry import lookup
from remote_steer.rundir import RunDamaged, RunDir, where_computed

_CELL = ("model", "dataset", "item_id", "layer", "layer_fraction", "strength")  # one item at one configuration
LOGIT_COLUMNS = (*_CELL, "logit_diff", "baseline_logit_diff")
GENERATION_COLUMNS = (*_CELL, "valid", "matches_behavior", "baseline_valid", "baseline_matches")


class ResultsError(DataError):
    """A run directory is missing, or its results tables are not what the runner writes."""


@dataclass
class RunInfo:
    path: Path
    name: str
    git_commit: str
    status: str
    created_at: str
    seed: object
    models: list[str]
    datasets: list[str]
    logit_rows: int
    generation_rows: int
    computed_on: dict[str, list[str]] = field(default_factory=dict)  # model → backend (host) of its rows

    @property
    def where(self) -> str:
        """Per model, where its numbers were computed (the Sources table's column)."""
        return "; ".join(f"{m}: {' and '.join(w)}" for m, w in self.computed_on.items())


@dataclass
class Table:
    key: str  # identifies the table (section placement, tests)
    title: str
    frame: pd.DataFrame  # presentation: formatted strings
    caption: str = ""
    main: bool = False  # printed by the CLI
    terminal: pd.DataFrame | None = None  # a narrower version for the terminal, where the full one is wide
    after: str = ""  # a finding printed after the table in report.md


@dataclass(frozen=True)
class FigurePlan:
    """A figure to draw: ``draw(stem)`` writes it and returns its files; None with the reason it is left out."""

    key: str
    title: str
    draw: Callable[[Path], list[Path]] | None
    skipped: str = ""  # why it is not drawn (when draw is None)


@dataclass
class Figure:
    key: str
    title: str
    paths: list[Path]
    skipped: str = ""  # why it was not drawn


@dataclass
class Report:
    out_dir: Path
    path: Path
    tables: list[Table]
    figures: list[Figure]
    notes: list[str]
    runs: list[RunInfo]
    texts: dict[str, str]  # free-text findings, e.g. the permutation test
    closing: list[str] = field(default_factory=list)  # findings printed after all tables


def _read_table(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise ResultsError(
            f"{path}: cannot read as Parquet ({type(error).__name__}); expected a results table"
        ) from None
    return _check_columns(frame, path, required)


def _check_columns(frame: pd.DataFrame, path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(required)}")
    return frame


@dataclass
class RunTables:
    """One run directory as both reports read it (through ``rundir.RunDir``)."""

    info: RunInfo
    logit: pd.DataFrame | None
    generation: pd.DataFrame | None
    training: dict[str, Any]


def read_run(path: Path, notes: list[str]) -> RunTables:
    """A run's record and results tables. A missing or damaged results table is rebuilt
    from the run's parts (a note says so); while the run is being written its parts are
    read as they stand, and a note says the run is in progress."""
    run = RunDir(path)
    if not run.root.is_dir():
        raise ResultsError(f"{path}: not a directory; expected a run directory containing results/logit_diff.parquet")
    try:
        manifest = run.read_manifest()
    except RunDamaged as error:
        raise ResultsError(str(error)) from None
    writer = run.writer()
    if writer is not None:
        notes.append(f"{path}: being written by {writer.describe()}; this report reads the chunks finished so far.")
    tables = {}
    for table, columns in (("logit_diff", LOGIT_COLUMNS), ("generation", GENERATION_COLUMNS)):
        try:
            frame = run.table(table, note=notes.append)
        except RunDamaged as error:
            raise ResultsError(str(error)) from None
        tables[table] = None if frame is None else _check_columns(frame, run.results_path(table), columns)
    logit, generation = tables["logit_diff"], tables["generation"]
    frames = [f for f in (logit, generation) if f is not None]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    spec = manifest.spec if manifest is not None else {}
    info = RunInfo(
        path=run.root.resolve(),
        name=str(spec.get("name", run.root.name)),
        git_commit=manifest.git_commit if manifest is not None else "unknown (no manifest)",
        status=manifest.status if manifest is not None else "unknown (no manifest)",
        created_at=str(manifest.created_at or "") if manifest is not None else "",
        seed=manifest.seed if manifest is not None and manifest.seed is not None else "",
        models=sorted(rows["model"].astype(str).unique()) if len(rows) else [],
        datasets=sorted(rows["dataset"].astype(str).unique()) if len(rows) else [],
        logit_rows=0 if logit is None else len(logit),
        generation_rows=0 if generation is None else len(generation),
        computed_on={str(m): where_computed(g) for m, g in rows.groupby("model", sort=True)} if len(rows) else {},
    )
    models = manifest.models if manifest is not None else {}
    training = {k: v.get("training") for k, v in models.items() if isinstance(v, dict)}
    return RunTables(info, logit, generation, training)


def mixed_note(runs: list[RunInfo]) -> str | None:
    """A note when the runs' numbers were computed in more than one place."""
    places = {w for r in runs for ws in r.computed_on.values() for w in ws}
    if len(places) < 2:
        return None
    return "numbers computed in more than one place (mixed backends): " + "; ".join(
        f"{r.name}: {r.where}" for r in runs
    )


def _canonical(name: str) -> str:
    card = lookup(name)
    return card.name if card is not None else name


def _normalise(frame: pd.DataFrame, training: dict[str, str | None], info: RunInfo) -> pd.DataFrame:
    frame = frame.copy()
    frame["item_id"] = frame["item_id"].astype(str)
    frame["layer"] = frame["layer"].astype(int)
    frame["strength"] = frame["strength"].astype(float)
    frame["layer_fraction"] = frame["layer_fraction"].astype(float)
    if "training" not in frame.columns:
        frame["training"] = frame["model"].map(lambda m: training.get(m) or "unknown")
    # a checkpoint the registry knows but the run could not label: take the registry's grouping
    unknown = frame["training"].isna() | (frame["training"] == "unknown")
    frame.loc[unknown, "training"] = frame.loc[unknown, "model"].map(
        lambda m: card.training if (card := lookup(m)) is not None else "unknown"
    )
    frame["model"] = frame["model"].astype(str).map(_canonical)
    frame["run"] = info.name
    if "seed" not in frame.columns:  # runs with different seeds merge as replicates
        frame["seed"] = info.seed
    return frame


def markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_(no rows)_\n"
    cells = [[str(c) for c in frame.columns]] + [[str(v).replace("|", "\\|") for v in row] for row in frame.to_numpy()]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in cells[0]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines) + "\n"
