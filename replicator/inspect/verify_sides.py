"""The two sides read next to each other: each SQLite-side call runs beside a PostgreSQL-side call.

Both sides run concurrently (sqlite3 and libpq release the GIL while they fetch; the Python encoding of one
side overlaps the other's I/O): in one child process holding the SQLite read transaction for large files
(true parallelism: the encoding of both sides is Python code, which threads would serialise on the GIL), in
one thread, or one after the other (:data:`Parallel`). Measured in ``bench/verify.py``.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, TypeVar

import psycopg

from triggers import source as sqlite_source

PROCESS_MIN_BYTES: Final = 32 << 20
T = TypeVar("T")
U = TypeVar("U")
Parallel: TypeAlias = Literal["process", "thread", "off"]

_CHILD: sqlite3.Connection | None = None
"""The SQLite connection of a verify child process; its one read transaction spans the whole run."""


def _child_open(path: str, busy_timeout_ms: int) -> None:
    """Child initializer: open the source and start the read transaction every later call reads in."""
    global _CHILD
    conn = sqlite_source.connect(path, readonly=True, busy_timeout_ms=busy_timeout_ms)
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    _CHILD = conn


def _in_child(fn: Callable[..., T], *args: Any) -> T:
    assert _CHILD is not None, "verify child process was not initialised"
    return fn(_CHILD, *args)


def _run_now(fn: Callable[..., T], conn: sqlite3.Connection, *args: Any) -> Future[T]:
    future: Future[T] = Future()
    try:
        future.set_result(fn(conn, *args))
    except BaseException as exc:
        future.set_exception(exc)
    return future


class Sides:
    """Runs each SQLite-side call (``fn(conn, *args)``) next to a PostgreSQL-side call.

    ``process``: in one child process holding the SQLite read transaction (true parallelism: the
    encoding of both sides is Python code, which threads would serialise on the GIL);
    ``thread``: in one thread, on the caller's connection; ``off``: one after the other.
    """

    def __init__(
        self, sconn: sqlite3.Connection, pconn: psycopg.Connection[Any], pool: Executor | None, parallel: Parallel
    ) -> None:
        self.sconn, self.pconn, self.pool, self.parallel = sconn, pconn, pool, parallel

    def sqlite(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        if self.pool is None:
            return _run_now(fn, self.sconn, *args)
        if self.parallel == "process":
            return self.pool.submit(_in_child, fn, *args)
        return self.pool.submit(fn, self.sconn, *args)

    def both(self, fn: Callable[..., T], args: Sequence[Any], on_pg: Callable[[], U]) -> tuple[T, U]:
        future = self.sqlite(fn, *args)
        theirs = on_pg()
        return future.result(), theirs


def _process_context() -> multiprocessing.context.BaseContext:
    """A fresh interpreter, never a plain fork: a forked child would inherit SQLite's in-process lock
    bookkeeping for this very file (the caller's connections, cutover's write lock) and could read
    without a real lock. The fork server is spawned once per process, then forks cheaply."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["replicator.inspect.verify"])
        return context
    return multiprocessing.get_context("spawn")


def choose(parallel: Parallel | Literal["auto"], source: Path | str) -> Parallel:
    """``auto``: a child process for files of ``PROCESS_MIN_BYTES`` and more (it costs ~1 s to start
    the first time); below that both sides run one after the other (threads gain nothing, measured)."""
    if parallel != "auto":
        return parallel
    return "process" if Path(source).stat().st_size >= PROCESS_MIN_BYTES else "off"


@contextmanager
def open_sides(
    source: Path | str,
    sconn: sqlite3.Connection,
    pconn: psycopg.Connection[Any],
    parallel: Parallel,
    busy_timeout_ms: int,
) -> Iterator[Sides]:
    if parallel == "off":
        yield Sides(sconn, pconn, None, parallel)
        return
    pool: Executor
    if parallel == "process":
        pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=_process_context(),
            initializer=_child_open,
            initargs=(str(Path(source).resolve()), busy_timeout_ms),
        )
    else:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-sqlite")
    with pool:
        yield Sides(sconn, pconn, pool, parallel)
