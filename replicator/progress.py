"""Progress of the long commands, one mechanism for all of them: snapshot, import, export, verify,
backup and cutover's pre-pass.

A command reports *tasks* (a table, a file) through :class:`Progress`: ``start`` with the total
expected, ``advance`` with how far it got, ``finish``. On a terminal the CLI draws a rich bar per task
on stderr; otherwise (a service, a pipe, ``--log-format json``) it writes one JSON log line per task
every ``PROGRESS_LOG_S`` seconds, so the output stays machine-readable and small. ``-q`` keeps the log
lines below its level. Library code takes ``progress: Progress | None`` and never knows which.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from replicator import log
from replicator.config import Config

PROGRESS_LOG_S = 5.0
"""Seconds between JSON progress lines in non-interactive runs."""


class Progress(Protocol):
    """Told how far each task got; the CLI draws bars or logs lines, tests may interrupt at a chosen row."""

    def start(self, table: str, total: int) -> None: ...

    def advance(self, table: str, rows: int) -> None:
        """``rows`` done so far for ``table`` (called once per batch: cheap to call, never per row)."""

    def finish(self, table: str, rows: int, seconds: float) -> None: ...


class LogProgress:
    """Non-interactive runs: one JSON log line per task every ``interval_s`` seconds."""

    def __init__(self, component: str = "snapshot", unit: str = "rows", interval_s: float = PROGRESS_LOG_S) -> None:
        self.component, self.unit, self.interval_s = component, unit, interval_s
        self._started: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._total: dict[str, int] = {}

    def start(self, table: str, total: int) -> None:
        now = time.monotonic()
        self._started[table], self._last[table], self._total[table] = now, now, total

    def advance(self, table: str, rows: int) -> None:
        now = time.monotonic()
        if now - self._last.get(table, now) < self.interval_s:
            return
        self._last[table] = now
        elapsed = max(now - self._started[table], 1e-9)
        rate = rows / elapsed
        total = self._total.get(table, 0)
        eta = (total - rows) / rate if rate > 0 and total > rows else 0.0
        fields = {self.unit: rows, "total": total, f"{self.unit}_per_s": round(rate), "eta_s": round(eta, 1)}
        log.get(self.component, table=table).info("progress", **fields)

    def finish(self, table: str, rows: int, seconds: float) -> None:
        self._started.pop(table, None)


class RichProgress:
    """Interactive runs: a rich progress bar per task (done/total, rate, ETA), on stderr."""

    def __init__(self, unit: str = "rows") -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskID,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bars

        self._bars = Bars(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} " + unit + "/s"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._started: dict[str, float] = {}

    def __enter__(self) -> RichProgress:
        self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.stop()

    def start(self, table: str, total: int) -> None:
        from rich.markup import escape  # a task is an app's table name: text, never markup

        self._tasks[table] = self._bars.add_task(escape(table), total=total, rate="-")
        self._started[table] = time.monotonic()

    def advance(self, table: str, rows: int) -> None:
        elapsed = max(time.monotonic() - self._started[table], 1e-9)
        self._bars.update(self._tasks[table], completed=rows, rate=f"{rows / elapsed:,.0f}")

    def finish(self, table: str, rows: int, seconds: float) -> None:
        rate = rows / seconds if seconds > 0 else float(rows)
        self._bars.update(self._tasks[table], completed=rows, total=max(rows, 1), rate=f"{rate:,.0f}")


def interactive(config: Config) -> bool:
    """Progress bars on a terminal unless JSON logs were asked for; JSON progress lines otherwise."""
    return sys.stderr.isatty() and config.log.format != "json"


@contextmanager
def shown(config: Config, *, quiet: bool, component: str, unit: str = "rows") -> Iterator[Progress]:
    """The progress a command shows: bars on a terminal (unless ``quiet``), JSON log lines otherwise."""
    if interactive(config) and not quiet:
        with RichProgress(unit) as bars:
            yield bars
    else:
        yield LogProgress(component, unit)
