"""The checkpoint chain in a real PostgreSQL: append and read, writer fencing, tampering, export, compaction."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from checkpoints import audit, compaction, exportfile, ledger, store
from checkpoints.digest import table_digest
from checkpoints.errors import ChainBroken, CheckpointError, CheckpointNotFound, CheckpointUsageError, WriterConflict
from checkpoints.findings import Finding, Problem, Report
from checkpoints.model import (
    ZERO_HASH,
    Checkpoint,
    Kind,
    Record,
    TableChange,
    encode_body,
    genesis,
    next_checkpoint,
    seal,
)
from tests.support.chain import SCHEMA, batch_tables, build_chain
from tests.support.paths import ROOT


def problems(findings: list[Finding]) -> set[tuple[int | None, Problem]]:
    return {(f.number, f.problem) for f in findings}


def reseal_in_db(conn: psycopg.Connection[Any], number: int, **changes: Any) -> Checkpoint:
    """A forger with write access: rewrite a checkpoint's fields and store a body and hash that agree."""
    original = store.get(conn, number)
    forged, body = seal(msgspec.structs.replace(original, hash="", **changes))
    conn.execute(
        "UPDATE replicator.checkpoints SET body = %s, hash = %s, prev_hash = %s, seq_from = %s, seq_to = %s"
        " WHERE number = %s",
        (body, forged.hash, forged.prev_hash, forged.seq_from, forged.seq_to, number),
    )
    return forged


def edit_body(conn: psycopg.Connection[Any], number: int, old: str, new: str) -> None:
    """A naive edit with SQL: the body changes, the hash column does not."""
    conn.execute(
        "UPDATE replicator.checkpoints SET body = convert_to(replace(convert_from(body, 'UTF8'), %s, %s), 'UTF8')"
        " WHERE number = %s AND position(convert_to(%s, 'UTF8') in body) > 0",
        (old, new, number, old),
    )
    assert conn.execute(
        "SELECT position(convert_to(%s, 'UTF8') in body) FROM replicator.checkpoints WHERE number = %s", (new, number)
    ).fetchone() != (0,)


# --- model -------------------------------------------------------------------------------------


def test_hash_covers_every_field_but_itself() -> None:
    first = genesis({"t": TableChange(upserted=1)}, seq_to=3, at="2026-01-01T00:00:00.000000Z", tool="x")
    body = encode_body(first)
    assert b'"hash"' not in body
    assert body.startswith(
        b'{"at":"2026-01-01T00:00:00.000000Z","compaction":null,"format":2,"journal_head":null,"kind":"genesis"'
    )
    assert first.hash == seal(msgspec.structs.replace(first, hash=""))[0].hash
    changes: list[dict[str, Any]] = [
        {"seq_to": 4},
        {"tool": "y"},
        {"tables": {}},
        {"at": "2026-01-01T00:00:00.000001Z"},
    ]
    for change in changes:
        assert seal(msgspec.structs.replace(first, hash="", **change))[0].hash != first.hash
    second = next_checkpoint(first, seq_to=9, tables={}, tool="x")
    assert (second.number, second.seq_from, second.seq_to, second.prev_hash) == (2, 4, 9, first.hash)
    with pytest.raises(CheckpointError, match="behind"):
        next_checkpoint(second, seq_to=8, tables={})


def test_table_changes_add_like_multisets() -> None:
    a, b = table_digest([(1,), (2,)]), table_digest([(3,)])
    both = TableChange(upserted=2, upserted_digest=a.hexdigest()) + TableChange(
        upserted=1, upserted_digest=b.hexdigest()
    )
    assert both.upserted == 3
    assert both.upserted_digest == table_digest([(1,), (2,), (3,)]).hexdigest()


def test_the_ledger_adds_up_rows_and_digests_through_updates_deletes_and_restatements() -> None:
    """genesis {1,2,3}; batch: 2 updated (old image out, new in), 3 deleted; a read restatement keeps the
    count; a second restatement that moves the count is a break; a format 1 batch cannot be added up."""
    rows = {1: (1, "a"), 2: (2, "b"), 3: (3, "c")}
    first = genesis({"t": TableChange.of(table_digest(rows.values()))}, seq_to=0)
    change = TableChange.of(table_digest([(2, "B")]), table_digest([(3,)]), removed=table_digest([(2, "b"), (3, "c")]))
    second = next_checkpoint(first, seq_to=2, tables={"t": change})
    after = table_digest([(1, "a"), (2, "B")])
    book = ledger.add_up([first, second])
    assert book.tables["t"] == ledger.Figures(2, after.hexdigest(), since=1)
    assert book.breaks == {}
    reread = TableChange(upserted=2, upserted_digest="ab" * 32, restated="read")
    third = next_checkpoint(second, seq_to=2, tables={"t": reread})
    book = ledger.add_up([first, second, third])
    assert book.tables["t"] == ledger.Figures(2, "ab" * 32, since=3, read_anew=(3,))
    moved = next_checkpoint(third, seq_to=2, tables={"t": TableChange(upserted=5, restated="read")})
    assert "5 rows" in ledger.add_up([first, second, third, moved]).breaks["t"]
    reload = next_checkpoint(third, seq_to=2, tables={"t": TableChange(upserted=5, restated="reload")})
    assert ledger.add_up([first, second, third, reload]).breaks == {}
    old = msgspec.structs.replace(next_checkpoint(first, seq_to=2, tables={"t": change}), format=1)
    assert "format 1" in ledger.add_up([first, old]).unknown["t"]


# --- store -------------------------------------------------------------------------------------


def test_append_latest_read_get(pg: psycopg.Connection[Any]) -> None:
    chain = build_chain(pg, 7)
    assert store.latest(pg) == chain[-1]
    assert store.read(pg) == chain
    assert [c.number for c in store.read(pg, since=2, limit=3)] == [3, 4, 5]
    assert [c.number for c in store.read(pg, since=6)] == [7]
    assert store.get(pg, 4) == chain[3]
    with pytest.raises(CheckpointNotFound, match=r"1\.\.7"):
        store.get(pg, 8)
    stored = pg.execute(
        "SELECT kind, seq_from, seq_to, prev_hash, hash FROM replicator.checkpoints WHERE number = 2"
    ).fetchone()
    assert stored == ("batch", 11, 15, chain[0].hash, chain[1].hash)
    assert audit.verify_db(pg) == []


def test_append_in_a_rolled_back_transaction_leaves_nothing(pg: psycopg.Connection[Any]) -> None:
    store.ensure_schema(pg, SCHEMA)
    first = genesis({}, seq_to=0)

    def batch_that_fails(checkpoint: Checkpoint, statement: str) -> None:
        with pg.transaction():
            store.append(pg, checkpoint)
            pg.execute("CREATE TABLE batch_data (id int)")
            pg.execute(statement)

    with pytest.raises(psycopg.errors.DivisionByZero):
        batch_that_fails(first, "SELECT 1/0")
    assert store.latest(pg) is None
    assert pg.execute("SELECT to_regclass('batch_data')").fetchone() == (None,)
    with pg.transaction():
        store.append(pg, first)
    with pytest.raises(psycopg.errors.UndefinedTable):
        batch_that_fails(next_checkpoint(first, seq_to=5, tables={}), "SELECT * FROM nowhere")
    assert store.latest(pg) == first
    assert pg.execute("SELECT count(*) FROM replicator.checkpoints").fetchone() == (1,)


def test_append_refuses_autocommit_unsealed_and_non_extending(pg: psycopg.Connection[Any]) -> None:
    chain = build_chain(pg, 2)
    with pytest.raises(CheckpointError, match="caller's transaction"):
        store.append(pg, next_checkpoint(chain[-1], seq_to=20, tables={}))
    unsealed = msgspec.structs.replace(next_checkpoint(chain[-1], seq_to=20, tables={}), seq_to=21)
    with pytest.raises(CheckpointError, match="not sealed"), pg.transaction():
        store.append(pg, unsealed)
    stale = next_checkpoint(chain[0], seq_to=30, tables={})  # built from an old head: number 2 again
    with pytest.raises(WriterConflict, match="does not extend"), pg.transaction():
        store.append(pg, stale)
    with pytest.raises(CheckpointError, match="no checkpoint table"), pg.transaction():
        store.append(pg, chain[1], "other")
    store.ensure_schema(pg, "other")
    with pytest.raises(WriterConflict, match="empty"), pg.transaction():
        store.append(pg, chain[1], "other")
    assert [c.number for c in store.read(pg)] == [1, 2]


def test_two_writers_racing_for_the_same_number(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as a, psycopg.connect(pg_dsn) as b:
        chain = build_chain(a, 1)
        a.commit()
        mine = next_checkpoint(chain[0], seq_to=20, tables={}, tool="a")
        theirs = next_checkpoint(chain[0], seq_to=25, tables={}, tool="b")
        store.append(a, mine)  # a's transaction is open and holds the head row
        outcome: list[BaseException | None] = []

        def other_writer() -> None:
            try:
                store.append(b, theirs)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)
            finally:
                b.rollback()

        thread = threading.Thread(target=other_writer)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the second writer must wait for the first"
        a.commit()
        thread.join(10)
        assert len(outcome) == 1
        assert isinstance(outcome[0], WriterConflict)
        assert outcome[0].hint
        assert [c.tool for c in store.read(a)] == ["test", "a"]


def test_state_schema_name_is_quoted(pg: psycopg.Connection[Any]) -> None:
    chain = build_chain(pg, 3, schema='audit "state"')
    assert store.read(pg, schema='audit "state"') == chain
    with pytest.raises(CheckpointError, match="no checkpoint table"):
        store.latest(pg, schema="absent")


# --- tampering ---------------------------------------------------------------------------------


def test_a_clean_chain_verifies(pg: psycopg.Connection[Any]) -> None:
    build_chain(pg, 5)
    assert audit.verify_db(pg) == []


def test_edited_body_is_found(pg: psycopg.Connection[Any]) -> None:
    build_chain(pg, 6)
    edit_body(pg, 3, '"upserted":2', '"upserted":3')
    found = audit.verify_db(pg)
    assert (3, Problem.EDITED) in problems(found)
    assert (4, Problem.BROKEN_LINK) in problems(found)  # the successor points at the original
    assert all(f.number in (3, 4) for f in found)


def test_edited_hash_and_copied_column_are_found(pg: psycopg.Connection[Any]) -> None:
    build_chain(pg, 4)
    pg.execute("UPDATE replicator.checkpoints SET hash = repeat('a', 64) WHERE number = 2")
    pg.execute("UPDATE replicator.checkpoints SET seq_to = 999 WHERE number = 4")
    found = audit.verify_db(pg)
    assert problems(found) == {(2, Problem.EDITED), (4, Problem.EDITED)}
    assert any("seq_to" in f.detail for f in found)


def test_deleted_checkpoint_is_found(pg: psycopg.Connection[Any]) -> None:
    build_chain(pg, 6)
    pg.execute("DELETE FROM replicator.checkpoints WHERE number = 4")
    found = audit.verify_db(pg)
    assert problems(found) == {(5, Problem.DELETED)}
    assert "checkpoint 4 " in found[0].detail
    pg.execute("DELETE FROM replicator.checkpoints WHERE number IN (1, 2)")
    assert (3, Problem.DELETED) in problems(audit.verify_db(pg))


def test_swapped_checkpoints_are_found(pg: psycopg.Connection[Any]) -> None:
    build_chain(pg, 6)
    for old, new in ((3, 1000), (4, 3), (1000, 4)):
        pg.execute("UPDATE replicator.checkpoints SET number = %s WHERE number = %s", (new, old))
    found = audit.verify_db(pg)
    assert {p for _, p in problems(found)} == {Problem.REORDERED}
    assert {n for n, _ in problems(found)} >= {3, 4}


def test_broken_link_is_found(pg: psycopg.Connection[Any]) -> None:
    chain = build_chain(pg, 6)
    reseal_in_db(pg, 3, prev_hash=chain[0].hash)
    found = audit.verify_db(pg)
    assert (3, Problem.BROKEN_LINK) in problems(found)
    assert (4, Problem.BROKEN_LINK) in problems(found)  # 3's hash changed with its body
    assert Problem.EDITED not in {f.problem for f in found}  # the forger made body and hash agree


def test_torn_tail_and_corrupt_middle_are_told_apart(pg: psycopg.Connection[Any]) -> None:
    build_chain(pg, 5)
    pg.execute("UPDATE replicator.checkpoints SET body = substring(body for 40) WHERE number IN (2, 5)")
    assert problems(audit.verify_db(pg)) >= {(2, Problem.CORRUPT), (5, Problem.TORN_TAIL)}
    with pytest.raises(ChainBroken, match="damaged"):
        store.latest(pg)


def _sealed_after(prev: Checkpoint, **fields: Any) -> Checkpoint:
    draft = next_checkpoint(prev, seq_to=prev.seq_to + 5, tables={})
    return seal(msgspec.structs.replace(draft, hash="", **fields))[0]


def test_seq_ranges_that_overlap_or_leave_a_gap_are_found() -> None:
    first = genesis({}, seq_to=10)
    second = next_checkpoint(first, seq_to=20, tables={})
    overlap = _sealed_after(second, seq_from=18, seq_to=30)
    gap = _sealed_after(overlap, seq_from=40, seq_to=45)
    backwards = _sealed_after(gap, seq_from=46, seq_to=44)
    found = audit.verify([first, second, overlap, gap, backwards])
    assert problems(found) == {(3, Problem.SEQ_OVERLAP), (4, Problem.SEQ_GAP), (5, Problem.SEQ_OVERLAP)}
    assert "31..39" in next(f.detail for f in found if f.problem is Problem.SEQ_GAP)
    with pytest.raises(CheckpointError, match="journal entries"):
        store._check_extends(overlap, second)


def test_every_finding_is_reported_at_once(pg: psycopg.Connection[Any]) -> None:
    build_chain(pg, 9)
    pg.execute("UPDATE replicator.checkpoints SET hash = repeat('b', 64) WHERE number = 2")
    pg.execute("DELETE FROM replicator.checkpoints WHERE number = 5")
    pg.execute("UPDATE replicator.checkpoints SET body = substring(body for 10) WHERE number = 9")
    found = audit.verify_db(pg)
    assert problems(found) >= {(2, Problem.EDITED), (6, Problem.DELETED), (9, Problem.TORN_TAIL)}
    assert all(str(f).startswith(f"checkpoint {f.number}: ") for f in found)


# --- export ------------------------------------------------------------------------------------


def test_export_verifies_offline(pg: psycopg.Connection[Any], tmp_path: Path) -> None:
    chain = build_chain(pg, 5)
    path = tmp_path / "chain.jsonl"
    head = exportfile.export(pg, path)
    assert (head.number, head.hash, head.count) == (5, chain[-1].hash, 5)
    assert audit.verify_file(path) == []
    lines = path.read_text().splitlines()
    assert len(lines) == 6
    assert lines[-1].startswith('{"head":')
    records, _, _ = exportfile.read_file(path)
    assert [r.decode() for r in records] == chain
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.fixture
def exported(pg: psycopg.Connection[Any], tmp_path: Path) -> tuple[Path, list[str]]:
    build_chain(pg, 6)
    path = tmp_path / "chain.jsonl"
    exportfile.export(pg, path)
    return path, path.read_text().splitlines(keepends=True)


def test_tampered_export_is_found(exported: tuple[Path, list[str]]) -> None:
    path, lines = exported
    edited = list(lines)
    edited[2] = edited[2].replace('\\"upserted\\":2', '\\"upserted\\":7')
    assert edited[2] != lines[2]
    path.write_text("".join(edited))
    assert (3, Problem.EDITED) in problems(audit.verify_file(path))

    path.write_text("".join(lines[:3] + lines[4:]))  # a line removed
    found = audit.verify_file(path)
    assert (5, Problem.DELETED) in problems(found)
    assert (6, Problem.HEAD_MISMATCH) in problems(found)

    path.write_text("".join([lines[0], lines[2], lines[1], *lines[3:]]))
    assert Problem.REORDERED in {f.problem for f in audit.verify_file(path)}


def test_truncated_export_is_a_torn_tail(exported: tuple[Path, list[str]]) -> None:
    path, lines = exported
    path.write_text("".join(lines[:-1]))  # cut at a line boundary: the head line is gone
    assert problems(audit.verify_file(path)) == {(None, Problem.TORN_TAIL)}
    path.write_text("".join(lines)[:-40])  # cut inside the head line
    assert problems(audit.verify_file(path)) == {(None, Problem.TORN_TAIL)}
    path.write_text("".join(lines[:3]) + lines[3][:50])  # cut inside a checkpoint
    assert Problem.TORN_TAIL in {f.problem for f in audit.verify_file(path)}
    path.write_text("".join(lines[:2]) + "garbage\n" + "".join(lines[3:]))
    assert (None, Problem.CORRUPT) in problems(audit.verify_file(path))


# --- compaction --------------------------------------------------------------------------------


def test_compact_then_verify(pg: psycopg.Connection[Any], tmp_path: Path) -> None:
    chain = build_chain(pg, 8)
    before = tmp_path / "before.jsonl"
    exportfile.export(pg, before)
    base = compaction.compact(pg, 4)
    assert (base.number, base.kind, base.prev_hash, base.seq_from, base.seq_to) == (
        4,
        Kind.COMPACTION,
        ZERO_HASH,
        0,
        chain[3].seq_to,
    )
    assert base.compaction is not None
    assert (base.compaction.first, base.compaction.last, base.compaction.count) == (1, 4, 4)
    assert base.compaction.head_hash == chain[3].hash
    assert base.tables["users"].upserted == sum(c.tables["users"].upserted for c in chain[:4])
    assert [c.number for c in store.read(pg)] == [4, 5, 6, 7, 8]
    assert audit.verify_db(pg) == []
    old_records, _, _ = exportfile.read_file(before)
    assert audit.verify_compaction(base, old_records) == []
    assert audit.verify_compaction(base, old_records[:2] + old_records[3:])

    # The chain keeps growing on top of it, and a second compaction folds the first in.
    following = next_checkpoint(store.latest(pg) or chain[-1], seq_to=200, tables={})
    with pg.transaction():
        store.append(pg, following)
    again = compaction.compact(pg, 6)
    assert again.compaction is not None
    assert (again.compaction.first, again.compaction.count) == (1, 6)
    assert audit.verify_db(pg) == []
    assert audit.verify_compaction(again, old_records) == []  # the fold continues across compactions

    after = tmp_path / "after.jsonl"
    exportfile.export(pg, after)
    assert audit.verify_file(after) == []


def test_tampering_after_compaction_is_found(pg: psycopg.Connection[Any]) -> None:
    build_chain(pg, 8)
    compaction.compact(pg, 4)
    edit_body(pg, 4, '"count":4', '"count":3')
    assert (4, Problem.EDITED) in problems(audit.verify_db(pg))


def test_forged_compaction_head_breaks_the_link(pg: psycopg.Connection[Any]) -> None:
    build_chain(pg, 8)
    base = compaction.compact(pg, 4)
    assert base.compaction is not None
    reseal_in_db(pg, 4, compaction=msgspec.structs.replace(base.compaction, head_hash="c" * 64))
    assert problems(audit.verify_db(pg)) == {(5, Problem.BROKEN_LINK)}


def test_deleting_after_compaction_is_found(pg: psycopg.Connection[Any]) -> None:
    build_chain(pg, 8)
    compaction.compact(pg, 4)
    pg.execute("DELETE FROM replicator.checkpoints WHERE number = 5")
    assert (6, Problem.DELETED) in problems(audit.verify_db(pg))
    pg.execute("DELETE FROM replicator.checkpoints WHERE number = 4")
    assert (6, Problem.DELETED) in problems(audit.verify_db(pg))


def test_compact_refuses_what_it_should(pg: psycopg.Connection[Any]) -> None:
    build_chain(pg, 5)
    with pytest.raises(CheckpointUsageError, match="head"):
        compaction.compact(pg, 5)
    with pytest.raises(CheckpointUsageError, match="nothing to compact"):
        compaction.compact(pg, 1)
    pg.execute("UPDATE replicator.checkpoints SET hash = repeat('d', 64) WHERE number = 2")
    with pytest.raises(ChainBroken, match="refusing"):
        compaction.compact(pg, 3)
    assert pg.execute("SELECT count(*) FROM replicator.checkpoints").fetchone() == (5,)


def test_records_round_trip_through_the_model() -> None:
    first = genesis({"t": TableChange(upserted=1)}, seq_to=3)
    record = Record.of(first)
    assert record.decode() == first
    with pytest.raises(CheckpointError, match="not a valid checkpoint"):
        Record(number=1, hash=first.hash, body=b'{"number": "one"}').decode()


# --- against an earlier export: the anchor from outside ---------------------------------------


def test_cut_off_or_rewritten_chain_is_found_against_an_earlier_export(
    pg: psycopg.Connection[Any], tmp_path: Path
) -> None:
    chain = build_chain(pg, 6)
    earlier = tmp_path / "earlier.jsonl"
    exportfile.export(pg, earlier)
    following = next_checkpoint(chain[-1], seq_to=100, tables={})
    with pg.transaction():
        store.append(pg, following)
    assert audit.report_db(pg, against=earlier).findings == []  # growing is fine

    compaction.compact(pg, 3)
    assert audit.report_db(pg, against=earlier).findings == []  # compaction accounts for 1..3

    compacted = tmp_path / "compacted.jsonl"
    exportfile.export(pg, compacted)
    assert audit.report_db(pg, against=compacted).findings == []  # holding the compaction record itself
    compaction.compact(pg, 4)
    assert audit.report_db(pg, against=compacted).findings == []
    assert audit.report_db(pg, against=earlier).findings == []

    pg.execute("DELETE FROM replicator.checkpoints WHERE number >= 6")  # the newest cut off: the chain alone verifies
    assert audit.verify_db(pg) == []
    assert problems(audit.report_db(pg, against=earlier).findings) == {(6, Problem.DELETED)}


def test_rewritten_history_is_found_against_an_earlier_export(pg: psycopg.Connection[Any], tmp_path: Path) -> None:
    build_chain(pg, 4)
    earlier = tmp_path / "earlier.jsonl"
    exportfile.export(pg, earlier)
    pg.execute("DELETE FROM replicator.checkpoints")
    build_chain(pg, 4)  # a whole new chain with fresh times: it verifies on its own
    assert audit.verify_db(pg) == []
    found = audit.report_db(pg, against=earlier).findings
    assert problems(found) == {(n, Problem.EDITED) for n in range(1, 5)}
    later = tmp_path / "later.jsonl"
    exportfile.export(pg, later)
    assert problems(audit.report_file(later, against=earlier).findings) == {(n, Problem.EDITED) for n in range(1, 5)}


def test_python_m_checkpoints_verifies_an_export_without_the_replicator(
    pg: psycopg.Connection[Any], tmp_path: Path
) -> None:
    import subprocess
    import sys

    build_chain(pg, 3)
    path = tmp_path / "chain.jsonl"
    exportfile.export(pg, path)
    probe = (
        "import sys, runpy; sys.argv = ['checkpoints', 'verify', sys.argv[1]];"
        "code = 0\n"
        "try:\n    runpy.run_module('checkpoints', run_name='__main__')\n"
        "except SystemExit as exc:\n    code = exc.code\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('replicator', 'triggers', 'psycopg')]\n"
        "print('loaded', loaded); sys.exit(code)"
    )
    ok = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "ok: 3 checkpoint(s) verify" in ok.stdout
    assert "loaded []" in ok.stdout
    path.write_text(path.read_text().replace('\\"seq_to\\":15', '\\"seq_to\\":16'))
    bad = subprocess.run(
        [sys.executable, "-m", "checkpoints", "verify", str(path)], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 3
    assert "checkpoint 2: edited" in bad.stdout


def test_checkpoints_never_imports_the_replicator_or_triggers() -> None:
    import ast

    package = ROOT / "checkpoints"
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not [n for n in names if n.split(".")[0] in ("replicator", "triggers")], module.name


def test_exporting_an_empty_chain_writes_nothing(pg: psycopg.Connection[Any], tmp_path: Path) -> None:
    store.ensure_schema(pg, SCHEMA)
    with pytest.raises(CheckpointError, match="no checkpoints to export"):
        exportfile.export(pg, tmp_path / "chain.jsonl")
    assert list(tmp_path.iterdir()) == []
    assert audit.report_db(pg) == Report(count=0, head=None, head_hash=None, findings=[])


# --- properties: any single tampering of a chain is found ---------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_CHAIN = [genesis({"users": TableChange(upserted=3)}, seq_to=10, tool="p")]
for _step in range(2, 9):
    _CHAIN.append(next_checkpoint(_CHAIN[-1], seq_to=_CHAIN[-1].seq_to + 4, tables=batch_tables(_step), tool="p"))
_RECORDS = [Record.of(c) for c in _CHAIN]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_byte_changed_in_any_body_is_found(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(_RECORDS) - 1))
    body = bytearray(_RECORDS[index].body)
    at = data.draw(st.integers(0, len(body) - 1))
    body[at] = data.draw(st.integers(0, 255).filter(lambda b: b != body[at]))
    tampered = list(_RECORDS)
    tampered[index] = Record(number=_RECORDS[index].number, hash=_RECORDS[index].hash, body=bytes(body))
    assert audit.verify(tampered)


@given(st.integers(0, len(_RECORDS) - 2), st.integers(1, len(_RECORDS) - 1))
def test_any_deletion_before_the_head_or_any_swap_is_found(i: int, j: int) -> None:
    assert audit.verify(_RECORDS) == []
    assert audit.verify(_RECORDS[:i] + _RECORDS[i + 1 :])
    if i != j:
        swapped = list(_RECORDS)
        swapped[i], swapped[j] = swapped[j], swapped[i]
        assert {f.problem for f in audit.verify(swapped)} >= {Problem.REORDERED}


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_byte_changed_in_an_export_is_found(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "chain.jsonl"
    _write_export(path)
    content = bytearray(path.read_bytes())
    head_line = content.rindex(b"\n", 0, len(content) - 1) + 1
    # Every checkpoint line and the head's count, number and hash are protected; its exported_at is
    # informational only, so the fuzzing stays on the checkpoint lines and the head's first bytes.
    at = data.draw(st.integers(0, head_line + 20))
    content[at] = data.draw(st.integers(0, 255).filter(lambda b: b != content[at]))
    path.write_bytes(bytes(content))
    assert audit.verify_file(path)


def _write_export(path: Path) -> None:
    """The export format, written without a database (what exportfile.export writes for _RECORDS)."""
    import msgspec as m

    lines = [m.json.encode({"number": r.number, "hash": r.hash, "body": r.body.decode()}) for r in _RECORDS]
    head = {"number": _RECORDS[-1].number, "hash": _RECORDS[-1].hash, "count": len(_RECORDS), "exported_at": "x"}
    lines.append(m.json.encode({"head": head}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert audit.verify_file(path) == []
