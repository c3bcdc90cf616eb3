"""The change journal: its entries, reading, heading and pruning it, and the canonical key encoding.

The journal is key-only: an entry says that the row with this key in this table changed at ``seq``;
the apply reads the *current* row for that key in the same read transaction as the journal range
(state-based apply). The trigger copies key values verbatim into untyped columns, so
:func:`read` returns them as the exact SQLite values: ``int``, ``float``, ``str``, ``bytes`` or
``None``. Text that is not valid UTF-8 comes back as a ``str`` with lone surrogates (PEP 383
``surrogateescape``); :func:`bind_value` turns it back into the exact bytes for a lookup.

For consumers that need one string per key (dict keys, hashing into checkpoints, logs) there is a
canonical, total text encoding: :func:`encode_key` / :func:`decode_key` (``NULL``, decimal INTEGER,
REAL as SQLite's round-tripping ``quote()``, ``X'..'`` BLOB, ``T`` + hex of the UTF-8 bytes for TEXT;
tokens joined by commas, which no token contains).
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

from triggers.ddl import key_column, old_key_column
from triggers.errors import CaptureNotInstalled, JournalTampered, SourceBusy
from triggers.names import JOURNAL
from triggers.schema import quote_ident
from triggers.source import undecodable_text

KeyValue = int | float | str | bytes | None
_log = structlog.get_logger().bind(component="capture.journal")
_INT = re.compile(r"-?[0-9]+\Z")
DEFAULT_PRUNE_CHUNK = 5_000
MIN_PRUNE_PAUSE_S = 0.005
DEFAULT_READ_LIMIT = 10_000
PRUNED_THROUGH = "pruned_through"
ANCHOR = "applied_checkpoint"
"""Meta key of the consumer's anchor: its own encoding of the last checkpoint it committed, written by
:func:`prune` in the transaction that deletes the entries that checkpoint covers. Opaque here: the
journal only keeps it next to ``pruned_through``, so the consumer can later prove its record of what
was applied was not cut off (``replicator.state.integrity``)."""


class Entry(msgspec.Struct, frozen=True):
    """One journal row: the row of ``table`` with ``key`` changed (``old_key``: its key before a PK change)."""

    seq: int
    table: str
    op: str
    """``I``, ``U``, ``D``, or ``R``: a row that a REPLACE may have deleted (a superset, see triggers.ddl).
    Informational: the apply deletes the key on the target and writes the current row, if any."""
    key: tuple[KeyValue, ...]
    old_key: tuple[KeyValue, ...] | None
    """Set only when an UPDATE changed the key (compared exactly: storage class and bytes)."""
    gen: int
    """The trigger generation that wrote it (bumped by each reinstall of that table's triggers)."""
    ts_ms: int | None = None
    """Statement time in ms since the epoch when installed with ``stamp_time``; else None."""


# --- key encoding -----------------------------------------------------------------------------


def _float_token(value: float) -> str:
    """SQLite's own ``quote()`` rendering of a REAL: it round-trips (15 digits, else 20; ``Inf``)."""
    if math.isnan(value):
        return "NULL"  # SQLite stores NaN as NULL
    with _FLOAT_LOCK:
        row = _FLOAT_CONN.execute("SELECT quote(?)", (value,)).fetchone()
    return str(row[0])


_FLOAT_CONN = sqlite3.connect(":memory:", check_same_thread=False)
_FLOAT_LOCK = threading.Lock()


def encode_value(value: KeyValue) -> str:
    """One token of the canonical key encoding; total: defined for every SQLite value."""
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
    """Inverse of :func:`encode_value`; raises ValueError on text it cannot have produced."""
    if token == "NULL":
        return None
    if token.startswith("T"):
        return bytes.fromhex(token[1:]).decode("utf-8", "surrogateescape")
    if token.startswith("X'") and token.endswith("'"):
        return bytes.fromhex(token[2:-1])
    if _INT.match(token):
        return int(token)
    try:
        value = float(token)  # also 'Inf' / '-Inf'
    except ValueError:
        raise ValueError(f"not a journal key token: {token[:40]!r}") from None
    return value if math.isinf(value) else _sqlite_float(token)


def _sqlite_float(token: str) -> float:
    """The REAL whose SQLite ``quote()`` is ``token``.

    Neither parser alone inverts quote(): it writes 15 digits whenever SQLite's own (not correctly
    rounded) parser reads the value back from them, where Python's correctly rounded ``float()`` may
    land on the neighbouring double (5.62201728689768e-301); and when it writes 20 digits, SQLite's
    parser may miss while Python's is exact (3.85214348728362367601e-292). So both are tried and
    the one that quotes back to the token wins.
    """
    python = float(token)
    with _FLOAT_LOCK:
        (native,) = _FLOAT_CONN.execute("SELECT CAST(? AS REAL)", (token,)).fetchone()
    for candidate in (python, float(native)):
        if _float_token(candidate) == token:
            return candidate
    return python


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
    """``"a" IS ? AND "b" IS ?`` and its parameters, to read the current row for a key.

    ``IS`` so a NULL in a key column (d8) matches. The column's own collation applies, so the PK
    index is used; under a NOCASE or RTRIM key that can return the row whose key differs from the
    journal's in case or trailing spaces (the same row after a PK change): keep only rows for which
    :func:`same_key` holds.
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


def width(conn: sqlite3.Connection) -> int:
    """How many key columns the journal has (the widest key among captured tables)."""
    names = {str(row[1]) for row in conn.execute(f"PRAGMA table_info({quote_ident(JOURNAL)})")}
    n = 0
    while key_column(n + 1) in names:
        n += 1
    return n


def _meta_value(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute('SELECT value FROM "_replicator_meta" WHERE key = ?', (key,)).fetchone()
    return None if row is None else str(row[0])


def _pruned_through(conn: sqlite3.Connection) -> int:
    return int(_meta_value(conn, PRUNED_THROUGH) or 0)


def anchor(conn: sqlite3.Connection) -> str | None:
    """The anchor the last :func:`prune` recorded (see :data:`ANCHOR`); None before the first."""
    _require(conn)
    return _meta_value(conn, ANCHOR)


def head(conn: sqlite3.Connection) -> int:
    """The highest committed seq visible to this connection; 0 when nothing was ever journaled.

    Raises when the journal lost its high-water row (someone deleted journal rows by hand): seqs
    could then be reused, and every position recorded downstream would be ambiguous.
    """
    _require(conn)
    top = conn.execute('SELECT max(seq) FROM "_replicator_journal"').fetchone()[0]
    pruned = _pruned_through(conn)
    if (top or 0) < pruned:
        raise JournalTampered(
            f"the journal's highest seq ({top}) is below what was pruned ({pruned}): rows were deleted by hand",
            hint="seq numbers may repeat now; run `replicator capture remove`, install again and re-snapshot",
        )
    return int(top or 0)


_LOST_HINT = (
    "the changes they recorded cannot be replayed: reload the target from SQLite with "
    "`replicator snapshot --replace`, then start `replicator run` again"
)


def check_range(conn: sqlite3.Connection, applied: int, *, seen: int = 0) -> int:
    """Prove the journal still holds every entry a consumer at ``applied`` has yet to read; returns the head.

    Seqs are contiguous (each new row is max(seq)+1 and :func:`prune` keeps the highest), and prune
    deletes only up to what the consumer committed: so above ``applied`` no seq may be missing, the
    head may not be below ``applied`` nor below a head the consumer has ``seen``, and ``pruned_through``
    may not pass ``applied`` (the consumer's record of what it applied would then be behind the
    journal: cut off, or restored from an older backup). Each is raised as :class:`JournalTampered`,
    naming the seqs. One count over the pending range; the gap is located only when one exists.
    """
    top = head(conn)
    pruned = _pruned_through(conn)
    if pruned > applied:
        raise _behind(pruned, applied)
    check_head(top, applied, seen=seen)
    (count,) = conn.execute('SELECT count(*) FROM "_replicator_journal" WHERE seq > ?', (applied,)).fetchone()
    if count != top - applied:
        raise _gap(conn, applied, top)
    return top


def check_head(top: int, applied: int, *, seen: int = 0) -> None:
    """Refuse a journal head below what a consumer applied or saw: seqs never go back, rows were deleted."""
    if top < max(applied, seen):
        what = f"the target applied up to seq {applied}" if top < applied else f"the daemon saw seq {seen}"
        raise JournalTampered(
            f"the journal ends at seq {top}, but {what}: journal rows were deleted by hand",
            hint=_LOST_HINT,
        )


def _gap(conn: sqlite3.Connection, after: int, top: int) -> JournalTampered:
    """The first missing seq range in (after, top], named (call only when one is missing)."""
    row = conn.execute(
        "SELECT prev + 1, seq - 1 FROM (SELECT seq, lag(seq, 1, ?) OVER (ORDER BY seq) AS prev "
        'FROM "_replicator_journal" WHERE seq > ? AND seq <= ?) WHERE seq > prev + 1 LIMIT 1',
        (after, after, top),
    ).fetchone()
    first, last = (int(row[0]), int(row[1])) if row else (after + 1, top)
    pruned = _pruned_through(conn)
    if first <= pruned:
        return _behind(pruned, after)
    return JournalTampered(
        f"journal entries {first}..{last} are missing: they were deleted from {JOURNAL} by hand, "
        f"not pruned (pruned through seq {pruned})",
        hint=_LOST_HINT,
    )


def _behind(pruned: int, applied: int) -> JournalTampered:
    return JournalTampered(
        f"the journal was pruned up to seq {pruned}, but the target's checkpoints end at seq {applied}: "
        "the target lost checkpoints it had committed (deleted, or restored from an older backup)",
        hint="run `replicator checkpoints verify --source ...` to see what is missing; " + _LOST_HINT,
    )


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


def _select_sql(n: int, *, safe: bool) -> str:
    """The page query. ``safe`` reads each key column as (is_text, bytes-or-value), because Python's
    sqlite3 cannot fetch text that is not valid UTF-8; the fast form reads the values as they are."""
    parts = []
    for i in range(1, n + 1):
        for col in (key_column(i), old_key_column(i)):
            if safe:
                parts.append(
                    f"typeof({col}) = 'text', CASE WHEN typeof({col}) = 'text' THEN CAST({col} AS BLOB) ELSE {col} END"
                )
            else:
                parts.append(col)
    cols = ", ".join(parts)
    return f'SELECT seq, tbl, op, gen, nk, ts_ms, {cols} FROM "_replicator_journal" WHERE seq > ? ORDER BY seq LIMIT ?'  # noqa: S608


def _value(is_text: int, raw: object) -> KeyValue:
    if is_text:
        assert isinstance(raw, bytes)
        return raw.decode("utf-8", "surrogateescape")
    assert raw is None or isinstance(raw, (int, float, str, bytes))
    return raw


def same_key(a: Sequence[object], b: Sequence[object]) -> bool:
    """Exact equality: 1 and 1.0 differ, and so do 'a' and 'A' whatever the column's collation."""
    return all(type(x) is type(y) and x == y for x, y in zip(a, b, strict=True))


def read(conn: sqlite3.Connection, after: int, limit: int = DEFAULT_READ_LIMIT) -> list[Entry]:
    """Entries with ``seq > after`` in seq order, at most ``limit`` of them."""
    _require(conn)
    n = width(conn)
    try:
        rows = conn.execute(_select_sql(n, safe=False), (after, limit)).fetchall()
    except sqlite3.OperationalError as exc:
        if not undecodable_text(exc):
            raise
        # A key holds text that is not valid UTF-8: this page goes the slow, exact way.
        rows = conn.execute(_select_sql(n, safe=True), (after, limit)).fetchall()
        rows = [row[:6] + tuple(_value(row[j], row[j + 1]) for j in range(6, len(row), 2)) for row in rows]
    entries = []
    for row in rows:
        seq, tbl, op, gen, nk, ts = row[:6]
        key = row[6 : 6 + 2 * nk : 2]  # k1, o1, k2, o2... → k1, k2
        old: tuple[KeyValue, ...] | None = None
        if op == "U":
            old = row[7 : 7 + 2 * nk : 2]
            if old == key and ((nk == 1 and type(old[0]) is type(key[0])) or same_key(old, key)):
                old = None  # most updates keep the key: tuple == and one type check, not a generator
        entries.append(Entry(seq, tbl, op, key, old, gen, ts))
    return entries


class KeyRange(msgspec.Struct):
    """A journal range as the apply needs it: per table, the keys it names (old keys of key changes
    included, each once, in first-seen order), its last seq and its number of entries."""

    count: int
    seq_to: int
    """Seq of the last entry (``after`` when the range is empty)."""
    keys: dict[str, dict[tuple[KeyValue, ...], None]]
    last: dict[str, int]
    entries: dict[str, int]


def _keys_sql(n: int) -> str:
    """The apply's page query: the old key only where an UPDATE changed it (``IS`` and ``typeof``: exact,
    as :func:`same_key`; the journal's columns have no collation, so text compares byte for byte)."""
    keys = ", ".join(key_column(i) for i in range(1, n + 1))
    olds = ", ".join(old_key_column(i) for i in range(1, n + 1))
    same = " AND ".join(
        f"{old_key_column(i)} IS {key_column(i)} AND typeof({old_key_column(i)}) = typeof({key_column(i)})"
        for i in range(1, n + 1)
    )
    return (
        f"SELECT seq, tbl, nk, op = 'U' AND NOT ({same}), {keys}, {olds} "  # noqa: S608 - generated column names
        'FROM "_replicator_journal" WHERE seq > ? ORDER BY seq LIMIT ?'
    )


def read_keys(conn: sqlite3.Connection, after: int, limit: int = DEFAULT_READ_LIMIT) -> KeyRange:
    """:func:`read` grouped by table for the apply, without an :class:`Entry` per row (3x less CPU)."""
    _require(conn)
    n = width(conn)
    keys: dict[str, dict[tuple[KeyValue, ...], None]] = {}
    last: dict[str, int] = {}
    counts: dict[str, int] = {}
    try:
        rows = conn.execute(_keys_sql(n), (after, limit)).fetchall()
    except sqlite3.OperationalError as exc:
        if not undecodable_text(exc):
            raise
        rows = None  # a key holds text that is not valid UTF-8: the exact, slow way
    if rows is None:
        slow = read(conn, after, limit)
        if slow and slow[-1].seq - after != len(slow):
            raise _gap(conn, after, slow[-1].seq)
        for e in slow:
            named = keys.setdefault(e.table, {})
            named[e.key] = None
            if e.old_key is not None:
                named[e.old_key] = None
            last[e.table] = e.seq
            counts[e.table] = counts.get(e.table, 0) + 1
        return KeyRange(sum(counts.values()), max(last.values(), default=after), keys, last, counts)
    if n == 1:
        for seq, tbl, _nk, moved, k1, o1 in rows:
            found = keys.get(tbl)
            if found is None:
                found = keys[tbl] = {}
                counts[tbl] = 0
            found[(k1,)] = None
            if moved:
                found[(o1,)] = None
            last[tbl] = seq
            counts[tbl] += 1
    else:
        for row in rows:
            seq, tbl, nk, moved = row[:4]
            found = keys.get(tbl)
            if found is None:
                found = keys[tbl] = {}
                counts[tbl] = 0
            found[row[4 : 4 + nk]] = None
            if moved:
                found[row[4 + n : 4 + n + nk]] = None
            last[tbl] = seq
            counts[tbl] += 1
    if rows and rows[-1][0] - after != len(rows):  # contiguous seqs: O(1) proof that none is missing
        raise _gap(conn, after, rows[-1][0])
    return KeyRange(len(rows), rows[-1][0] if rows else after, keys, last, counts)


class LagTracker:
    """Replication lag in seconds, from when the reader first *saw* each head.

    The trigger writes no timestamp (a time function costs every app statement, and SQLite's 'now'
    is the statement start, d15). The daemon calls :meth:`observe` whenever the Watcher fires —
    within milliseconds of the commit — so ``lag_s`` is close to "now minus commit time" of the
    oldest change not applied yet. Thread-safe; memory is bounded by the pending heads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[tuple[int, float]] = []

    def observe(self, head_seq: int, at: float | None = None) -> None:
        at = time.time() if at is None else at
        with self._lock:
            if not self._seen or head_seq > self._seen[-1][0]:
                self._seen.append((head_seq, at))

    def lag_s(self, applied: int, now: float | None = None) -> float:
        """0.0 when everything seen is applied; else the age of the oldest unapplied observation."""
        now = time.time() if now is None else now
        with self._lock:
            while self._seen and self._seen[0][0] <= applied:
                self._seen.pop(0)
            return max(0.0, now - self._seen[0][1]) if self._seen else 0.0


class JournalStats(msgspec.Struct, frozen=True):
    rows: int
    """Rows in the journal, the kept high-water row included."""
    first_seq: int | None
    head: int
    pruned_through: int
    pending: int
    """Entries above ``pruned_through``: the backlog not yet applied and pruned."""
    lag_s: float | None = None
    """Age of the oldest pending stamped entry (tables installed with ``stamp_time``); None otherwise."""


def stats(conn: sqlite3.Connection, now_ms: int | None = None) -> JournalStats:
    _require(conn)
    count, first = conn.execute('SELECT count(*), min(seq) FROM "_replicator_journal"').fetchone()
    pruned = _pruned_through(conn)
    pending = conn.execute('SELECT count(*) FROM "_replicator_journal" WHERE seq > ?', (pruned,)).fetchone()[0]
    oldest = conn.execute(
        'SELECT ts_ms FROM "_replicator_journal" WHERE seq > ? AND ts_ms IS NOT NULL ORDER BY seq LIMIT 1', (pruned,)
    ).fetchone()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return JournalStats(
        rows=int(count),
        first_seq=None if first is None else int(first),
        head=head(conn),
        pruned_through=pruned,
        pending=int(pending),
        lag_s=None if oldest is None else max(0.0, (now_ms - int(oldest[0])) / 1000.0),
    )


# --- pruning ----------------------------------------------------------------------------------


_BOUNDS = 'SELECT (SELECT min(seq) FROM "_replicator_journal"), (SELECT max(seq) FROM "_replicator_journal")'
"""Two subqueries: SQLite's min/max optimisation (one seek) applies only to a query with a single
``min()`` or ``max()``; ``SELECT min(seq), max(seq)`` scans the whole journal (100 ms at 1M rows, once
per prune chunk)."""


def size(conn: sqlite3.Connection) -> int:
    """Entries in the journal, from its seq bounds (two index seeks, whatever its size): the seqs held are
    contiguous, since pruning deletes from the bottom and SQLite numbers a new row max(seq)+1."""
    _require(conn)
    first, top = conn.execute(_BOUNDS).fetchone()
    return 0 if first is None else int(top) - int(first) + 1


def page_bytes(conn: sqlite3.Connection) -> int | None:
    """Bytes of the journal's pages in the file (``dbstat``, which walks them: not for every call); None
    where SQLite was built without the dbstat table."""
    _require(conn)
    try:
        row = conn.execute("SELECT sum(pgsize) FROM dbstat('main', 1) WHERE name = ?", (JOURNAL,)).fetchone()
    except sqlite3.OperationalError:  # no such table: dbstat
        return None
    return int(row[0] or 0)


def prune(
    conn: sqlite3.Connection,
    applied: int,
    *,
    chunk: int = DEFAULT_PRUNE_CHUNK,
    pause_s: float | None = None,
    anchor: str | None = None,
) -> int:
    """Delete entries with ``seq <= applied`` in short write transactions of at most ``chunk`` rows.

    The highest row is never deleted (the high-water row): SQLite numbers a new row max(seq)+1, so
    keeping the max is what makes seqs never repeat (d6). ``pruned_through`` is recorded in the
    meta table in the same transaction, so a hand-made deletion is detected by :func:`head`, and so is
    ``anchor`` (the consumer's record of the checkpoint that covers ``applied``, see :data:`ANCHOR`):
    one more row in a transaction that already writes the meta table, no write of its own.

    Each chunk is its own ``BEGIN IMMEDIATE … COMMIT`` lasting milliseconds, and between chunks we
    sleep at least as long as the chunk took (``pause_s`` None) or ``pause_s``: without the pause we
    would grab the lock again before a waiting app writer's busy handler wakes up (it sleeps 1, 2, 5,
    10... ms), starving it towards its busy_timeout and ``database is locked``. With it, an app
    writer waits about one chunk.

    Returns the number of rows deleted; when the lock cannot be had within the busy timeout after some
    chunks, it stops there and returns (the rest goes next cycle). Safe to rerun.
    """
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    _require(conn)
    deleted = 0
    while True:
        first, top = conn.execute(_BOUNDS).fetchone()
        if first is None or first > applied or first >= top:
            return deleted
        upper = min(applied, int(first) + chunk - 1, int(top) - 1)
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
            conn.execute(
                'INSERT OR REPLACE INTO "_replicator_meta" (key, value) VALUES (?, ?)',
                (PRUNED_THROUGH, str(max(upper, _pruned_through(conn)))),
            )
            if anchor is not None:
                conn.execute('INSERT OR REPLACE INTO "_replicator_meta" (key, value) VALUES (?, ?)', (ANCHOR, anchor))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        deleted += cur.rowcount
        time.sleep(max(MIN_PRUNE_PAUSE_S, time.perf_counter() - started) if pause_s is None else pause_s)
