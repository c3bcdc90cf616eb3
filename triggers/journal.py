"""The change journal: its entries, the key encoding, and reading, heading and pruning it.

The journal is key-only: an entry says that the row with this key in this table changed at ``seq``;
the apply reads the *current* row for that key in the same read transaction as the journal range
(state-based apply). Keys use one canonical text encoding, produced by the trigger in SQL
(:func:`triggers.ddl.encode_expr`) and decoded here back to the exact SQLite values:
``int``, ``float``, ``str``, ``bytes`` or ``None``.

Text that is not valid UTF-8 decodes to a ``str`` with lone surrogates (PEP 383 ``surrogateescape``);
:func:`bind_value` turns such a value back into the exact bytes for a lookup.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import msgspec
import structlog

from triggers.ddl import JOURNAL
from triggers.errors import CaptureNotInstalled, SourceBusy
from triggers.schema import quote_ident

KeyValue = int | float | str | bytes | None
_log = structlog.get_logger().bind(component="capture.journal")
_INT = re.compile(r"-?[0-9]+\Z")
DEFAULT_PRUNE_CHUNK = 5_000
MIN_PRUNE_PAUSE_S = 0.005
DEFAULT_READ_LIMIT = 10_000


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """One journal row: the row of ``table`` with ``key`` changed (``old_key``: its key before a PK change)."""

    seq: int
    table: str
    op: str
    """``I``, ``U`` or ``D``. Informational: the apply reads the current row whatever the op."""
    key: str
    old_key: str | None
    gen: int
    ts_ms: int
    """Statement time in ms since the epoch (constant within one statement): for lag, not ordering."""


# --- key encoding -----------------------------------------------------------------------------


def _float_token(value: float) -> str:
    """SQLite's own ``quote()`` rendering of a REAL, so Python and trigger tokens are identical."""
    if math.isnan(value):
        return "NULL"  # SQLite stores NaN as NULL
    with _FLOAT_LOCK:
        row = _FLOAT_CONN.execute("SELECT quote(?)", (value,)).fetchone()
    return str(row[0])


_FLOAT_CONN = sqlite3.connect(":memory:", check_same_thread=False)
_FLOAT_LOCK = threading.Lock()


def encode_value(value: KeyValue) -> str:
    """One token of the canonical key encoding (the same text the trigger's SQL produces)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_token(value)
    if isinstance(value, str):
        return "T" + value.encode("utf-8", "surrogateescape").hex().upper()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "X'" + bytes(value).hex().upper() + "'"
    raise TypeError(f"not a SQLite value: {type(value).__name__}")


def encode_key(values: Sequence[KeyValue]) -> str:
    return ",".join(encode_value(v) for v in values)


def decode_value(token: str) -> KeyValue:
    """Inverse of :func:`encode_value`; raises ValueError on text no trigger can have produced."""
    if token == "NULL":
        return None
    if token.startswith("T"):
        return bytes.fromhex(token[1:]).decode("utf-8", "surrogateescape")
    if token.startswith("X'") and token.endswith("'"):
        return bytes.fromhex(token[2:-1])
    if _INT.match(token):
        return int(token)
    try:
        return float(token)  # also 'Inf' / '-Inf'
    except ValueError:
        raise ValueError(f"not a journal key token: {token[:40]!r}") from None


def decode_key(text: str) -> tuple[KeyValue, ...]:
    """The key's values in key-column order (one value for rowid and single-column keys)."""
    return tuple(decode_value(token) for token in text.split(","))


def bind_value(value: KeyValue) -> tuple[str, KeyValue]:
    """A placeholder and parameter that select exactly this value, invalid UTF-8 text included."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "CAST(? AS TEXT)", value.encode("utf-8", "surrogateescape")
    return "?", value


def key_predicate(key_columns: Sequence[str], values: Sequence[KeyValue]) -> tuple[str, list[KeyValue]]:
    """``"a" IS ? AND "b" IS ?`` and its parameters, to read the current row for a decoded key.

    ``IS`` so a NULL in a key column (d8) matches; the column's own collation and affinity apply,
    exactly as for the app's own lookups.
    """
    if len(key_columns) != len(values):
        raise ValueError(f"key has {len(values)} values for {len(key_columns)} columns")
    parts: list[str] = []
    params: list[KeyValue] = []
    for col, value in zip(key_columns, values, strict=True):
        placeholder, param = bind_value(value)
        parts.append(f"{quote_ident(col)} IS {placeholder}")
        params.append(param)
    return " AND ".join(parts), params


# --- reading ----------------------------------------------------------------------------------


def exists(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (JOURNAL,)).fetchone()
    return row is not None


def _require(conn: sqlite3.Connection) -> None:
    if not exists(conn):
        raise CaptureNotInstalled(
            "the change journal is not installed in this database",
            hint="run `replicator capture install --source app.db` first",
        )


def head(conn: sqlite3.Connection) -> int:
    """The highest seq ever assigned and committed, as seen by this connection's snapshot.

    After pruning empties the journal, ``sqlite_sequence`` still holds the last seq, so the head
    never goes backwards. 0 when nothing was ever journaled.
    """
    _require(conn)
    row = conn.execute(
        'SELECT coalesce((SELECT max(seq) FROM "_replicator_journal"),'
        " (SELECT seq FROM sqlite_sequence WHERE name = ?), 0)",
        (JOURNAL,),
    ).fetchone()
    return int(row[0])


@contextmanager
def read_transaction(conn: sqlite3.Connection) -> Iterator[int]:
    """A read transaction whose first statement reads the head (d17: BEGIN takes no snapshot).

    Everything read inside sees exactly the journal up to the yielded head and the rows as of it.
    The connection must be in autocommit mode (``isolation_level=None``), as ``source.connect`` gives.
    """
    conn.execute("BEGIN")
    try:
        yield head(conn)
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def read(conn: sqlite3.Connection, after: int, limit: int = DEFAULT_READ_LIMIT) -> list[Entry]:
    """Entries with ``seq > after`` in seq order, at most ``limit`` of them."""
    _require(conn)
    rows = conn.execute(
        'SELECT seq, tbl, op, key, old_key, gen, ts_ms FROM "_replicator_journal" WHERE seq > ? ORDER BY seq LIMIT ?',
        (after, limit),
    ).fetchall()
    return [
        Entry(int(s), str(t), str(o), str(k), None if ok is None else str(ok), int(g), int(ts))
        for s, t, o, k, ok, g, ts in rows
    ]


class JournalStats(msgspec.Struct, frozen=True):
    rows: int
    first_seq: int | None
    head: int
    oldest_ts_ms: int | None
    lag_s: float | None
    """Age of the oldest unpruned entry: how far behind the apply is (None when empty)."""


def stats(conn: sqlite3.Connection, now_ms: int | None = None) -> JournalStats:
    _require(conn)
    count, first = conn.execute('SELECT count(*), min(seq) FROM "_replicator_journal"').fetchone()
    oldest = conn.execute('SELECT ts_ms FROM "_replicator_journal" ORDER BY seq LIMIT 1').fetchone()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    oldest_ts = None if oldest is None or oldest[0] is None else int(oldest[0])
    return JournalStats(
        rows=int(count),
        first_seq=None if first is None else int(first),
        head=head(conn),
        oldest_ts_ms=oldest_ts,
        lag_s=None if oldest_ts is None else max(0.0, (now_ms - oldest_ts) / 1000.0),
    )


# --- pruning ----------------------------------------------------------------------------------


def prune(
    conn: sqlite3.Connection,
    applied: int,
    *,
    chunk: int = DEFAULT_PRUNE_CHUNK,
    pause_s: float | None = None,
) -> int:
    """Delete entries with ``seq <= applied`` in short write transactions of at most ``chunk`` rows.

    Each chunk is its own ``BEGIN IMMEDIATE … COMMIT`` lasting milliseconds, and between chunks we
    sleep at least as long as the chunk took (``pause_s`` None) or ``pause_s``: without the pause we
    would grab the lock again before a waiting app writer's busy handler wakes up (it sleeps 1, 2, 5,
    10... ms), starving it towards its busy_timeout and ``database is locked``. With it, an app
    writer waits about one chunk.
    Returns the number of rows deleted; when the lock cannot be had within the busy timeout after some
    chunks, it stops there and returns (the rest goes next cycle). Safe to rerun: it only ever
    deletes applied entries.
    """
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    _require(conn)
    deleted = 0
    while True:
        first = conn.execute('SELECT min(seq) FROM "_replicator_journal"').fetchone()[0]
        if first is None or first > applied:
            return deleted
        upper = min(applied, int(first) + chunk - 1)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if deleted:  # partial progress is progress: the rest is pruned next cycle
                _log.warning("prune stopped early: database busy", deleted=deleted, applied=applied, error=str(exc))
                return deleted
            raise SourceBusy(
                f"cannot prune the journal: the database stayed locked ({exc})",
                hint="app writers kept the write lock for the whole busy timeout; pruning retries next cycle",
            ) from None
        started = time.perf_counter()
        try:
            cur = conn.execute('DELETE FROM "_replicator_journal" WHERE seq <= ?', (upper,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        deleted += cur.rowcount
        time.sleep(max(MIN_PRUNE_PAUSE_S, time.perf_counter() - started) if pause_s is None else pause_s)
