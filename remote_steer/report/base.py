"""What both reports share: the results tables' columns, the report's parts, and
reading a run's tables. ``build`` (logit diff) and ``generation`` both import
from here, and neither imports the other at module level or inside functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from remote_steer.errors import DataError
from remote_steer.models.registry import lookup

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
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(required)}")
    return frame


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
