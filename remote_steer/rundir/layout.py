"""``RunDir``: every path under a run directory, and the one reader and writer of it.

Layout (docs/reference.md "Run directory")::

    <run>/manifest.json                     the run record (rundir/manifest.py)
    <run>/.lock                             the process writing the run (rundir/lock.py)
    <run>/vectors/<model>/<concept>.safetensors           (rundir/vectorfile.py)
    <run>/vectors/<model>/<concept>.controls.safetensors  control vectors, when asked
    <run>/parts/<table>/<model>/<concept>/items-00000.parquet   one file per finished chunk
    <run>/parts/letter_control/<model>/<concept>.parquet  one file per model × concept
    <run>/results/<table>.parquet           derived: every part of the table, concatenated
    <run>/results/summary.csv               derived: best layer and Glass's delta
    <run>/results/letter_effects.csv        derived: the letter control per cell
    <run>/jobs/<key>.json, <key>.payload    remote job journal (rundir/journal.py)
    <run>/report/                           what `remote-steer report` writes by default
    <run>/export/<format>/                  what `remote-steer export` writes by default

The parts are the record; every ``results/`` file is rebuilt from them when missing
or damaged.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from remote_steer.rundir import journal
from remote_steer.rundir.files import (
    git_commit,
    package_versions,
    read_parquet,
    slug,
    write_csv,
    write_json,
    write_parquet,
)
from remote_steer.rundir.lock import Holder, RunLock, holder
from remote_steer.rundir.manifest import Manifest, RunDamaged, now
from remote_steer.rundir.parts import Provenance, damage, required_columns, stamp, with_provenance

MANIFEST = "manifest.json"
RESULTS = "results"
PARTS = "parts"
VECTORS = "vectors"
JOBS = "jobs"
Note = Callable[[str], None]


class RunDir:
    """One run directory. Paths are computed, never checked, until a method reads."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        #: model label → where this session computes its parts; stamped on every part
        #: written for that model (with the job ids journaled under the chunk's key)
        self.provenance: dict[str, Provenance] = {}

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # -- paths -------------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def lock_path(self) -> Path:
        return self.root / ".lock"

    @property
    def jobs_dir(self) -> Path:
        return self.root / JOBS

    @property
    def summary_path(self) -> Path:
        return self.root / RESULTS / "summary.csv"

    @property
    def letter_effects_path(self) -> Path:
        return self.root / RESULTS / "letter_effects.csv"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def export_dir(self, fmt: str) -> Path:
        return self.root / "export" / fmt

    def vector_path(self, model: str, concept: str) -> Path:
        return self.root / VECTORS / slug(model) / f"{slug(concept)}.safetensors"

    def method_vector_path(self, model: str, concept: str, method: str) -> Path:
        """Another extraction method's vectors beside the CAA ones (``run/methods_stage.py``)."""
        return self.root / VECTORS / slug(model) / f"{slug(concept)}.{method}.safetensors"

    def write_local_results(self, table: str, frame: pd.DataFrame, engine: str = "fast") -> None:
        """A results table computed here from a finished run (methods, side effects,
        ablation), each row stamped as computed locally with this client's versions."""
        from remote_steer.rundir.files import package_versions

        write_parquet(
            self.results_path(table), stamp(frame, Provenance("local", None, engine, client=package_versions()))
        )

    def controls_path(self, model: str, concept: str) -> Path:
        return self.root / VECTORS / slug(model) / f"{slug(concept)}.controls.safetensors"

    def part_dir(self, table: str, model: str, concept: str) -> Path:
        return self.root / PARTS / table / slug(model) / slug(concept)

    def part_path(self, table: str, model: str, concept: str, first_item: int, extension: int = 0) -> Path:
        """A chunk's part; ``extension`` n > 0: the n-th part added when the run was extended."""
        suffix = f".x{extension}" if extension else ""
        return self.part_dir(table, model, concept) / f"items-{first_item:05d}{suffix}.parquet"

    def chunk_parts(self, table: str, model: str, concept: str, first: int) -> list[Path]:
        """The part files of the chunk starting at item ``first``: the first part and its extensions."""
        folder = self.part_dir(table, model, concept)
        if not folder.is_dir():
            return []
        return sorted(folder.glob(f"items-{first:05d}.parquet")) + sorted(folder.glob(f"items-{first:05d}.x*.parquet"))

    def cell_part_path(self, table: str, model: str, concept: str) -> Path:
        """A table kept as one part per model × concept (the letter control)."""
        return self.root / PARTS / table / slug(model) / f"{slug(concept)}.parquet"

    def part_files(self, table: str, model: str | None = None, concept: str | None = None) -> list[Path]:
        """Every part of ``table`` (of one model × concept when given), chunked or per cell."""
        folder = self.root / PARTS / table
        if model is not None and concept is not None:
            cell = self.part_dir(table, model, concept)
            return sorted(cell.glob("items-*.parquet")) if cell.is_dir() else []
        return sorted(folder.glob("*/*/items-*.parquet")) + sorted(folder.glob("*/*.parquet"))

    def results_path(self, table: str) -> Path:
        return self.root / RESULTS / f"{table}.parquet"

    def is_run(self) -> bool:
        return self.manifest_path.is_file()

    # -- manifest ----------------------------------------------------------------

    def read_manifest(self) -> Manifest | None:
        """The run record (None for a directory without one); damaged: ``RunDamaged``."""
        if not self.manifest_path.exists():
            return None
        return Manifest.read(self.manifest_path)

    def manifest(self) -> Manifest:
        """The run record; a directory without one is one ``RunDamaged`` line."""
        return Manifest.read(self.manifest_path)

    def write_manifest(self, manifest: Manifest) -> None:
        write_json(self.manifest_path, manifest.to_json())

    def open_run(self, spec: dict[str, Any], seed: int, datasets: dict[str, Any]) -> bool:
        """Create the run record, or mark an existing one running again. True if resuming.
        (Whether the spec may change is ``run/extend.reconcile``'s question, asked first.)"""
        existing = self.read_manifest()
        if existing is not None:
            existing.status, existing.resumed_at, existing.datasets = "running", now(), datasets
            self.write_manifest(existing)
            return True
        created = Manifest(
            spec=json.loads(json.dumps(spec, default=str)),
            seed=seed,
            git_commit=git_commit(),
            versions=package_versions(),
            created_at=now(),
            datasets=datasets,
        )
        self.write_manifest(created)
        return False

    def update_manifest(self, **fields: Any) -> None:
        manifest = self.read_manifest() or Manifest(spec={})
        for key, value in fields.items():
            if hasattr(manifest, key) and key != "extra":
                setattr(manifest, key, value)
            else:
                manifest.extra[key] = value
        manifest.updated_at = now()
        self.write_manifest(manifest)

    # -- lock --------------------------------------------------------------------

    def lock(self) -> RunLock:
        """``with run_dir.lock():`` one writer at a time (``RunLocked`` otherwise)."""
        return RunLock(self.lock_path, self.root)

    def clear_temporaries(self) -> int:
        """Remove the temporary files of writes a killed process never finished (call
        with the lock held: no other writer can be midway). Returns how many."""
        own = {self.report_dir, self.root / "export"}
        stale = [p for p in self.root.rglob(".*.tmp") if not own & set(p.parents)]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def writer(self) -> Holder | None:
        """The live process writing this run, if any."""
        current = holder(self.lock_path)
        mine = current is not None and current.pid == os.getpid() and current.host == socket.gethostname()
        return None if current is None or mine or current.gone() else current

    # -- parts -------------------------------------------------------------------

    def write_part(
        self,
        table: str,
        model: str,
        concept: str,
        first_item: int,
        frame: pd.DataFrame,
        extension: int = 0,
        job_key: str | None = None,
    ) -> None:
        """Write a chunk's part, stamped with ``self.provenance[model]`` (and the ids of
        the remote jobs journaled under ``job_key``)."""
        path = self.part_path(table, model, concept, first_item, extension)
        write_parquet(path, self._stamped(model, frame, job_key))

    def write_cell_part(self, table: str, model: str, concept: str, frame: pd.DataFrame) -> None:
        """Write the part of a table kept as one part per model × concept."""
        write_parquet(self.cell_part_path(table, model, concept), self._stamped(model, frame, None))

    def _stamped(self, model: str, frame: pd.DataFrame, job_key: str | None) -> pd.DataFrame:
        provenance = self.provenance.get(model)
        if provenance is None:
            return frame
        if job_key is not None:
            provenance = dataclasses.replace(provenance, job_ids=tuple(journal.job_ids(self.jobs_dir, job_key)))
        return stamp(frame, provenance)

    def set_aside_damaged(self, table: str, note: Note | None = None) -> list[Path]:
        """Rename every damaged part of ``table`` to ``<name>.damaged`` (one ``note`` line
        each), so its chunk is computed again. Returns the new names."""
        moved = []
        for path in self.part_files(table):
            why = damage(path, required_columns(table))
            if why is None:
                continue
            target = journal.set_aside(path)
            moved.append(target)
            if note is not None:
                note(f"{path}: damaged part ({why}); set aside as {target.name}, its chunk is computed again")
        return moved

    def read_parts(self, table: str) -> pd.DataFrame:
        """Every whole part of ``table`` concatenated, provenance columns included
        (damaged parts are skipped: ``set_aside_damaged`` names them)."""
        frames = [read_parquet(p) for p in self.part_files(table) if damage(p, required_columns(table)) is None]
        frames = [f for f in frames if not f.empty]
        return with_provenance(pd.concat(frames, ignore_index=True)) if frames else pd.DataFrame()

    def consolidate(self, table: str) -> pd.DataFrame:
        """Rebuild ``results/<table>.parquet`` from the parts (the parts are the record);
        with no parts, no results file."""
        frame = self.read_parts(table)
        if frame.empty:
            self.results_path(table).unlink(missing_ok=True)
        else:
            write_parquet(self.results_path(table), frame)
        return frame

    # -- the one reader ------------------------------------------------------------

    def table(self, table: str, note: Note | None = None) -> pd.DataFrame | None:
        """``results/<table>.parquet``, or None when the run has none.

        A missing or damaged results file is rebuilt from the parts (and written, unless
        another process is writing the run: then the rebuilt table is read, not written).
        While a run is in progress the parts are read directly: a consistent snapshot of
        every chunk finished so far."""
        path = self.results_path(table)
        busy = self.writer() is not None
        damaged = None
        if path.is_file() and not busy:
            try:
                return with_provenance(read_parquet(path))
            except Exception as error:  # noqa: BLE001 - pyarrow raises many kinds for a bad file
                damaged = str(error).splitlines()[0][:60] if str(error) else type(error).__name__
        frame = self.read_parts(table)
        if frame.empty:
            if damaged is not None:
                raise RunDamaged(
                    f"{path}: damaged results table ({damaged}) and no parts to rebuild it from; "
                    "rerun `remote-steer run` with the same spec"
                )
            return None
        if note is not None and (damaged is not None or not path.is_file()) and not busy:
            note(f"{path}: {'damaged' if damaged else 'missing'}; rebuilt from the run's parts")
        if not busy:
            write_parquet(path, frame)
        return frame

    def has_table(self, table: str) -> bool:
        """True when the run holds ``table``: its results file, or parts to rebuild it from."""
        return self.results_path(table).is_file() or bool(self.part_files(table))

    def summary(self) -> pd.DataFrame:
        """``results/summary.csv`` (empty when absent or unreadable)."""
        try:
            return pd.read_csv(self.summary_path)
        except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
            return pd.DataFrame()

    def write_summary(self, frame: pd.DataFrame) -> None:
        write_csv(self.summary_path, frame)
