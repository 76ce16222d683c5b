"""Result parts: one Parquet file per finished chunk, each row carrying its provenance.

Every part row says where and how it was computed (``PROVENANCE_COLUMNS``): the
backend kind and host, the engine, the remote job ids, the server's versions when
known and the client's versions. A part that cannot be read (truncated, not Parquet,
missing columns) is *damaged*: it is set aside as ``<name>.damaged`` and its chunk is
computed again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from remote_steer.rundir.files import read_parquet

#: Columns every part of a chunked table must have.
REQUIRED_COLUMNS = ("model", "dataset", "layer", "strength")
#: Tables whose parts hold no strength (one row per model × concept × layer).
UNSTEERED_TABLES = ("decodability",)


def required_columns(table: str) -> tuple[str, ...]:
    """The columns a part of ``table`` must have to be whole."""
    return REQUIRED_COLUMNS[:3] if table in UNSTEERED_TABLES else REQUIRED_COLUMNS


#: Provenance columns, on every row of every part and results table.
PROVENANCE_COLUMNS = ("backend", "host", "engine", "job_ids", "server", "client")
#: What a part written before provenance was recorded says.
UNRECORDED = "unrecorded"


@dataclass(frozen=True)
class Provenance:
    """Where and how a part was computed."""

    backend: str  # local | remote | simulated-remote
    host: str | None = None  # the remote server; None locally
    engine: str = ""  # fast | plain
    job_ids: tuple[str, ...] = ()  # remote jobs that computed it, in order
    server: dict[str, str] = field(default_factory=dict)  # server nnsight/python versions when known
    client: dict[str, str] = field(default_factory=dict)  # client package versions

    @property
    def where(self) -> str:
        """``local``, or ``remote (host)``: how the closing table and report name it."""
        return self.backend if not self.host else f"{self.backend} ({self.host})"

    def columns(self) -> dict[str, str | None]:
        short = {k: v for k, v in self.client.items() if k in ("python", "remote-steer", "nnsight", "torch")}
        return {
            "backend": self.backend,
            "host": self.host or "",
            "engine": self.engine,
            "job_ids": ",".join(self.job_ids),
            "server": json.dumps(self.server, sort_keys=True) if self.server else "",
            "client": json.dumps(short, sort_keys=True),
        }


def stamp(frame: pd.DataFrame, provenance: Provenance) -> pd.DataFrame:
    """``frame`` with the provenance columns on every row."""
    return frame.assign(**provenance.columns())


def with_provenance(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every provenance column (rows of parts written before provenance
    was recorded say ``unrecorded``; nothing is guessed)."""
    missing = [c for c in PROVENANCE_COLUMNS if c not in frame.columns]
    if not missing:
        return frame
    return frame.assign(**{c: UNRECORDED if c in ("backend", "host") else "" for c in missing})


def damage(path: Path, required: Sequence[str] = REQUIRED_COLUMNS) -> str | None:
    """Why the part at ``path`` cannot be used (None when it is whole)."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    try:
        pq.read_schema(path).pandas_metadata  # noqa: B018 - parsed to check it: the footer has no checksum
        frame = read_parquet(path)
    except Exception as error:  # noqa: BLE001 - pyarrow raises many kinds for a bad file
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        return f"not a readable Parquet file: {text[:70]}"
    lacking = [c for c in required if c not in frame.columns]
    if lacking:
        return f"lacks the column(s) {', '.join(lacking)}"
    return None


def where_computed(frame: pd.DataFrame) -> list[str]:
    """The distinct ``backend (host)`` of ``frame``'s rows, in order of appearance."""
    if frame.empty or "backend" not in frame.columns:
        return []
    host = frame["host"].fillna("").astype(str) if "host" in frame.columns else pd.Series("", index=frame.index)
    labels = frame["backend"].astype(str) + host.map(lambda h: f" ({h})" if h and h != UNRECORDED else "")
    return list(dict.fromkeys(labels))
