"""Terminal display, kept out of the core: stages report progress to a ``Display``.

``RichDisplay`` draws progress bars (items/s, ETA) and tables with rich;
``NullDisplay`` draws nothing and is what tests and library callers get by default.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Protocol, Sequence


class ProgressTask(Protocol):
    def advance(self, n: int = 1) -> None: ...

    def state(self, text: str) -> None: ...  # e.g. a remote job's state: QUEUED, RUNNING


class Display(Protocol):
    def progress(self, description: str, total: int, unit: str = "items") -> "contextmanager[ProgressTask]": ...
    def note(self, message: str) -> None: ...
    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], caption: str = "") -> None: ...


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass

    def state(self, text: str) -> None:
        pass


class NullDisplay:
    """Draws nothing. Notes are kept so tests can read them."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    @contextmanager
    def progress(self, description: str, total: int, unit: str = "items") -> Iterator[ProgressTask]:
        yield _NullTask()

    def note(self, message: str) -> None:
        self.notes.append(message)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], caption: str = "") -> None:
        pass


class _RichTask:
    def __init__(self, progress, task_id) -> None:
        self._progress, self._task_id = progress, task_id

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task_id, n)

    def state(self, text: str) -> None:
        self._progress.update(self._task_id, state=text)


class RichDisplay:
    """Progress bars and tables on a rich console (stderr for progress, stdout for tables)."""

    def __init__(self, console=None) -> None:
        from rich.console import Console

        self.console = console or Console()

    @contextmanager
    def progress(self, description: str, total: int, unit: str = "items") -> Iterator[ProgressTask]:
        from rich.progress import (
            BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
            TimeElapsedColumn, TimeRemainingColumn,
        )

        columns = (
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("[cyan]{task.fields[state]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(description, total=total, rate="", state="")
            task = _RateTask(progress, task_id, unit)
            yield task

    def note(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], caption: str = "") -> None:
        from rich.table import Table

        table = Table(title=title, caption=caption or None)
        for column in columns:
            text = column in ("model", "dataset", "weights", "files", "concept")
            # fold rather than truncate: a model or dataset name must stay readable
            table.add_column(column, justify="left" if text else "right", overflow="fold")
        for row in rows:
            table.add_row(*[_fmt(v) for v in row])
        self.console.print(table)


class _RateTask(_RichTask):
    """Advances the bar and shows the throughput in the stage's own unit."""

    def __init__(self, progress, task_id, unit: str) -> None:
        super().__init__(progress, task_id)
        self._unit = unit

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task_id, n)
        task = self._progress.tasks[self._task_id]
        speed = task.finished_speed or task.speed
        if speed:
            self._progress.update(self._task_id, rate=f"{speed:.1f} {self._unit}/s")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "—" if value != value else f"{value:.3f}"
    return str(value)
