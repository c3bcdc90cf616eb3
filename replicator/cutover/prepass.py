"""The SQLite pre-pass: every journaled table's count and checksum read once before the freeze, at journal
head H0, in a read transaction kept open; and the SQLite side at a later position, the pre-pass adjusted by
the keys journaled since.

Why: reading every table whole inside the freeze would make the outage as long as the database is big. The
pre-pass pays that read while the app still writes; at the stop point only the changed keys are read, the
old rows through the pre-pass's own transaction (SQLite *as it was at H0*) and the new ones now, so the
outage costs O(changed keys), not O(table). PostgreSQL's side is the apply's running digests, checked once
here against the rows they sum.
"""

from __future__ import annotations

import hashlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from checkpoints.digest import RowEncoder
from replicator import pg
from replicator.apply.digests import table_digest_of
from replicator.apply.tablestate import read_digests
from replicator.cutover.comparison import load_shape, quarantined_keys, report_keys
from replicator.cutover.session import Session
from replicator.inspect import verify, verify_compare, verify_shape, verify_sqlite
from replicator.state.store import StateStore
from triggers import journal
from triggers.schema import quote_ident

FULL_RECHECK_FRACTION: Final = 0.25
"""A table with more changed keys than this fraction of its rows is re-read whole, not adjusted."""
MODULUS: Final = 1 << 256


class Prepass:
    """Counts and digests of every table at journal head H0, and the open read transaction they came from."""

    def __init__(
        self,
        session: Session,
        conn: sqlite3.Connection,
        head: int,
        digests: dict[str, tuple[int, int]],
        quarantined: dict[str, frozenset[str]],
    ):
        self.session, self.conn, self.head, self.digests = session, conn, head, digests
        self.quarantined = quarantined
        """The quarantine's keys per table the digests leave out: a table whose set changed since (a
        parent fixed releases its dependents; one quarantined takes them) is read again whole."""

    @classmethod
    def read(cls, session: Session) -> Prepass:
        """SQLite at H0 in this thread; PostgreSQL checked against its running digests in another."""
        names = session.journaled_tables()  # snapshot-only tables are copied again, then proven
        counts = read_digests(session.state_store, names)  # the progress bars' totals
        quarantined = quarantined_keys(session)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cutover-pg-prepass") as pool:
            pg_check = pool.submit(_pg_inconsistent, session)
            conn = session.open_again()
            try:
                conn.execute("BEGIN")
                head = journal.head(conn)
                digests = {}
                for name in names:
                    shown = verify_compare.TableProgress(session.progress, name, counts.get(name, (0, ""))[0])
                    shape = load_shape(session, name, quarantined)
                    side = verify_sqlite.table_digest_sqlite(conn, shape, on_rows=shown.side("sqlite"))
                    shown.finish(side.count + side.refused)
                    digests[name] = (side.count, side.sum)
                bad = pg_check.result()
            except BaseException:
                conn.close()
                raise
        if bad:
            conn.close()
            report_keys(session, bad, "in the pre-pass (PostgreSQL against its running digests)")
        session.log.info("pre-pass read", journal_head=head, tables=len(digests))
        return cls(session, conn, head, digests, quarantined)

    def advance(self) -> None:
        """Roll the pre-pass forward to the current head: re-read only the keys journaled since."""
        session = self.session
        conn = session.open_again()
        try:
            conn.execute("BEGIN")
            head = journal.head(conn)
            changed = verify._pending_keys(conn, self.head, head) if head > self.head else {}
            quarantined = quarantined_keys(session)
            moved = {n for n in self.digests if quarantined.get(n) != self.quarantined.get(n)}
            for name in sorted(moved | set(changed)):
                if name in self.digests:
                    keys = changed.get(name)
                    self.digests[name], _how = sqlite_at_stop(session, self, conn, name, keys, quarantined)
        except BaseException:
            conn.close()
            raise
        self.conn.close()
        self.conn, self.head, self.quarantined = conn, head, quarantined

    def close(self) -> None:
        self.conn.close()


def sqlite_at_stop(
    session: Session,
    prepass: Prepass,
    now: sqlite3.Connection,
    name: str,
    keys: list[tuple[Any, ...]] | None,
    quarantined: dict[str, frozenset[str]],
) -> tuple[tuple[int, int], str]:
    """The SQLite side at the stop point: the pre-pass, adjusted by the changed keys, or re-read (also when
    the table's quarantined keys changed since the pre-pass: that changes rows no key names)."""
    base = prepass.digests[name]
    shape = load_shape(session, name, quarantined)
    whole = quarantined.get(name) != prepass.quarantined.get(name)
    if name not in session.targets or whole:  # not journaled (snapshot-only): read it whole
        side = verify_sqlite.table_digest_sqlite(now, shape)
        return (side.count, side.sum), "full"
    if not keys:
        return base, "prepass"
    cap = session.meta.tables.get(name)
    if cap is None or cap.key_columns is None or len(set(keys)) > max(1, base[0]) * FULL_RECHECK_FRACTION:
        side = verify_sqlite.table_digest_sqlite(now, shape)
        return (side.count, side.sum), "full"
    try:
        old = _rows_by_key(prepass.conn, shape, cap.key_columns, keys)
        new = _rows_by_key(now, shape, cap.key_columns, keys)
    except (sqlite3.OperationalError, UnicodeDecodeError):  # text that is not UTF-8: the full read handles it
        side = verify_sqlite.table_digest_sqlite(now, shape)
        return (side.count, side.sum), "full"
    count, total = base
    count += new[0] - old[0]
    total += new[1] - old[1]
    return (count, total % MODULUS), "incremental"


def _rows_by_key(
    conn: sqlite3.Connection, shape: verify_shape.Shape, key_columns: tuple[str, ...], keys: list[tuple[Any, ...]]
) -> tuple[int, int]:
    """Count and digest sum of the rows holding ``keys`` in this connection's read transaction."""
    to_rows = verify_shape.source_rows(shape)
    encoder = RowEncoder(shape.kinds)
    cols = ", ".join(quote_ident(c) for c in shape.source_columns) or "NULL"
    keyed = ", ".join(quote_ident(c) for c in key_columns)
    seen: set[tuple[Any, ...]] = set()
    count = total = 0
    for key in keys:
        marker = tuple((type(v).__name__, v) for v in key)
        if marker in seen:
            continue
        seen.add(marker)
        where, params = journal.key_predicate(key_columns, key)
        query = f"SELECT {cols}, {keyed} FROM {quote_ident(shape.source)} WHERE {where}"  # noqa: S608 - quote_ident
        raw = [r for r in conn.execute(query, params).fetchall() if journal.same_key(r[-len(key_columns) :], key)]
        for row in to_rows([r[: len(r) - len(key_columns)] for r in raw]):
            if row is None:
                continue
            count += 1
            total += int.from_bytes(hashlib.sha256(encoder.encode(row)).digest(), "big")
    return count, total


def _pg_inconsistent(session: Session) -> list[str]:
    """Tables whose rows in PostgreSQL no longer add up to the running digest: written by someone else.

    Nothing applies meanwhile (we hold the daemon's lock), so from here to the stop point PostgreSQL
    changes only through the drain, whose batches keep the running digests exact."""
    with pg.connect(session.dsn, autocommit=True, connect_timeout=session.config.target.connect_timeout_s) as conn:
        running = read_digests(StateStore(conn, session.state_schema), list(session.targets))
        bad = []
        for name, target in session.targets.items():
            digest = table_digest_of(conn, target)
            if running.get(name) != (digest.count, digest.hexdigest()):
                bad.append(name)
    return bad
