"""Terminal display, kept out of the core: stages report progress to a ``Display``.

``RichDisplay`` draws progress bars (items/s, ETA) and tables with rich;
``NullDisplay`` draws nothing and is what tests and library callers get by default.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol


class ProgressTask(Protocol):
    def advance(self, n: int = 1) -> None: ...

    def state(self, text: str) -> None: ...  # e.g. a remote job's state: QUEUED, RUNNING


class Display(Protocol):
    def plan_steps(self, steps: Sequence[str]) -> None: ...  # the run's stages in order, for "[k/N]"
    def progress(
        self, description: str, total: int, unit: str = "items", pace: str | None = None
    ) -> AbstractContextManager[ProgressTask]: ...
    def note(self, message: str) -> None: ...
    def table(
        self, title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], caption: str = ""
    ) -> None: ...


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass

    def state(self, text: str) -> None:
        pass


class NullDisplay:
    """Draws nothing. Notes are kept so tests can read them."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def plan_steps(self, steps: Sequence[str]) -> None:
        pass

    @contextmanager
    def progress(
        self, description: str, total: int, unit: str = "items", pace: str | None = None
    ) -> Iterator[ProgressTask]:
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


class _RightStripped:
    """A text stream that drops the spaces rich pads each line with (a piped table's
    cells are padded to the column width): what lands in a file has no trailing spaces."""

    def __init__(self, stream) -> None:
        self._stream, self._pending = stream, ""

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            self._stream.write(line.rstrip(" ") + "\n")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def close_line(self) -> None:
        if self._pending:
            self._stream.write(self._pending.rstrip(" "))
            self._pending = ""


def eta_text(task) -> str:
    """The ETA column's text: rich's remaining time once the bar has a rate of its own;
    before that (rows arrive a chunk at a time) an estimate, marked ~, from the rate an
    earlier bar of the same pace measured; "ETA ?" when there is neither."""
    if task.finished:
        return "ETA 0:00"
    remaining, mark = task.time_remaining, ""
    prior = task.fields.get("prior_rate")
    if remaining is None and prior and task.total is not None:
        remaining, mark = max(0.0, task.total - task.completed) / prior, "~"
    if remaining is None:
        return "ETA ?"
    minutes, seconds = divmod(int(round(remaining)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"ETA {mark}{hours}:{minutes:02d}:{seconds:02d}" if hours else f"ETA {mark}{minutes}:{seconds:02d}"


def _eta_column():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class EtaColumn(ProgressColumn):
        max_refresh = 0.5

        def render(self, task) -> Text:
            return Text(eta_text(task), style="progress.remaining")

    return EtaColumn()


class RichDisplay:
    """Progress bars and tables on a rich console (stdout). Text from outside (names,
    captions, notes, model answers) is never read as rich markup, and piped output has no
    trailing spaces."""

    def __init__(self, console=None) -> None:
        from rich.console import Console

        if console is None:
            console = Console()
            if not console.is_terminal:
                stripped: Any = _RightStripped(console.file)  # a file-like stream, not an IO subclass
                console = Console(file=stripped, width=console.width)
        self.console = console
        self._rates: dict[str, float] = {}  # pace -> units per second, measured by a finished bar

    def plan_steps(self, steps: Sequence[str]) -> None:
        """The run's stages in order ("model · concept · stage"), so each bar can show
        the overall position ``[k/N]``; a resumed run still counts the skipped ones."""
        self._steps = list(steps)

    @contextmanager
    def progress(
        self, description: str, total: int, unit: str = "items", pace: str | None = None
    ) -> Iterator[ProgressTask]:
        """A bar counting ``total`` ``unit`` (named after the count: "12/340 rows") with an
        ETA. Bars given the same ``pace`` share their measured rate, so a bar whose units
        arrive a chunk at a time starts with an estimated ETA (~) rather than none."""
        import time

        from rich.markup import escape
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        steps = getattr(self, "_steps", [])
        position = f"[{steps.index(description) + 1}/{len(steps)}] " if description in steps else ""
        wide = self.console.width >= 120
        if not wide and " · " in description:
            # narrow terminal: "model · concept" on its own line, the bar names the stage
            where, stage = description.rsplit(" · ", 1)
            if where != getattr(self, "_last_where", None):
                self.console.print(where, highlight=False, style="bold", markup=False)
                self._last_where = where
            description = stage
        columns = [
            TextColumn(escape(position) + "{task.description}"),
            BarColumn(bar_width=None if wide else 10),
            MofNCompleteColumn(),
            TextColumn(escape(unit)),
        ]
        if wide:
            columns += [TaskProgressColumn(), TextColumn("{task.fields[rate]}")]
        columns += [
            TextColumn("[cyan]{task.fields[state]}"),
            SpinnerColumn(),  # moves while a chunk is computed (its rows arrive at its end)
            TimeElapsedColumn(),
            _eta_column(),
        ]
        prior = self._rates.get(pace) if pace else None
        started = time.perf_counter()
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(escape(description), total=total, rate="", state="", prior_rate=prior)
            task = _RateTask(progress, task_id, unit)
            yield task
            done = next(t.completed for t in progress.tasks if t.id == task_id)
        elapsed = time.perf_counter() - started
        if pace and done and elapsed > 0:
            self._rates[pace] = done / elapsed

    def note(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], caption: str = "") -> None:
        for renderable in fit_table(title, columns, rows, caption, self.console.width):
            self.console.print(renderable)


_TEXT_COLUMNS = (
    "hosted",
    "model",
    "dataset",
    "weights",
    "files",
    "concept",
    "backend",
    "host",
    "answer",
    "stage",
    "note",
)


def _table(title, columns, rows, caption, compact: bool):
    """A rich table whose cells never wrap: a cell breaks only where it holds a newline."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=Text(title) if title else None,
        caption=Text(caption) if caption else None,
        box=box.SIMPLE_HEAD if compact else box.ROUNDED,
        padding=(0, 1),
        collapse_padding=compact,
        show_edge=not compact,
        title_justify="left" if compact else "center",
        caption_justify="left",  # a caption of several lines reads left-aligned
    )
    for column in columns:
        text = column in _TEXT_COLUMNS
        table.add_column(Text(column), justify="left" if text else "right", no_wrap=True)
    for row in rows:  # Text, not str: a cell's "[...]" is shown, never read as markup
        table.add_row(*(Text(cell) for cell in row))
    return table


def _width(table, width: int) -> int:
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=max(width, 1000), file=io.StringIO(), force_terminal=False)  # measures; writes nothing
    return Measurement.get(console, console.options, table).maximum


def _framed(title: str, tables: list, caption: str) -> list:
    from rich.text import Text

    out = [Text(title, style="bold")] if title else []
    for n, table in enumerate(tables):
        if n:
            out.append(Text(""))  # a blank line between the parts of a split table
        out.append(table)
    if caption:
        out.append(Text(caption))
    return out


def fit_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], caption: str, width: int) -> list:
    """Renderables showing the table within ``width`` columns without breaking a word:
    the boxed table if it fits; else a borderless compact one; else the columns split
    over several tables that each repeat the first (identifying) column; else one
    stacked record per row (``column: value`` lines)."""
    from rich.text import Text

    cells = [[_fmt(v) for v in row] for row in rows]
    columns = [str(c) for c in columns]
    table = _table(title, columns, cells, caption, False)
    if _width(table, width) <= width:
        return [table]
    # compact: borderless, and title and caption as lines of their own that wrap at the
    # terminal's width rather than the (narrower) table's
    table = _table("", columns, cells, "", True)
    if _width(table, width) <= width:
        return _framed(title, [table], caption)
    # Split the columns: the identifying columns (the first, and the text columns right
    # after it, such as model and dataset) stay in every part.
    n_key = 1
    while n_key < len(columns) - 1 and columns[n_key] in ("dataset", "concept") and n_key < 3:
        n_key += 1
    key_width = _width(_table("", columns[:n_key], [r[:n_key] for r in cells], "", True), width)
    if key_width > width // 2:
        n_key = 1
    key, rest = columns[:n_key], list(range(n_key, len(columns)))
    parts: list[list[int]] = []
    current: list[int] = []
    for index in rest:
        trial = current + [index]
        probe = _table(
            "", key + [columns[i] for i in trial], [r[:n_key] + [r[i] for i in trial] for r in cells], "", True
        )
        if current and _width(probe, width) > width:
            parts.append(current)
            current = [index]
        else:
            current = trial
    if current:
        parts.append(current)
    fits = all(
        _width(
            _table("", key + [columns[i] for i in part], [r[:n_key] + [r[i] for i in part] for r in cells], "", True),
            width,
        )
        <= width
        for part in parts
    )
    if fits and len(parts) > 1:
        tables = [
            _table("", key + [columns[i] for i in part], [r[:n_key] + [r[i] for i in part] for r in cells], "", True)
            for part in parts
        ]
        return _framed(f"{title} (in {len(parts)} parts)" if title else "", tables, caption)
    # Stacked records: one "column: value" line per cell.
    out = [Text(title, style="bold")] if title else []
    label = max(len(c) for c in columns) if columns else 0
    for row in cells:
        lines = []
        for column, value in zip(columns, row, strict=True):
            pad = " " * (label + 2)
            value = value.replace("\n", "\n" + pad)
            lines.append(f"{column:>{label}}: {value}")
        out.append(Text("\n".join(lines) + "\n", no_wrap=True, overflow="ignore"))
    if caption:
        out.append(Text(caption))
    return out


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
