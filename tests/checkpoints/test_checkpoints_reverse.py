"""The rollback window in the chain (issue 20): reverse, rollback and finalize checkpoints after the cutover.

The grammar (what may follow what, and where each range starts), the audit's findings about chains that break
it, the ledger through reverse records (and at the cutover, what the cutover certificate checks), the store
and compaction around them. The expected transitions are written out here, not read from the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpoints import audit, compaction, ledger, store
from checkpoints.anchor import Anchor, check_anchor
from checkpoints.digest import TableDigest, table_digest
from checkpoints.errors import CheckpointError, CheckpointUsageError
from checkpoints.findings import Finding, Problem
from checkpoints.model import (
    Checkpoint,
    Kind,
    Record,
    TableChange,
    compaction_of,
    genesis,
    next_checkpoint,
    seal,
)
from tests.support.chain import SCHEMA, build_chain

T0 = "2026-01-01T00:00:00.000000Z"

#: The grammar, written out: what may follow each kind (genesis and compaction only start a chain).
ALLOWED: dict[Kind, set[Kind]] = {
    Kind.GENESIS: {Kind.BATCH, Kind.CUTOVER},
    Kind.BATCH: {Kind.BATCH, Kind.CUTOVER},
    Kind.COMPACTION: {Kind.BATCH, Kind.CUTOVER},
    Kind.CUTOVER: {Kind.REVERSE, Kind.ROLLBACK, Kind.FINALIZE},
    Kind.REVERSE: {Kind.REVERSE, Kind.ROLLBACK, Kind.FINALIZE},
    Kind.ROLLBACK: set(),
    Kind.FINALIZE: set(),
}
WINDOW = (Kind.REVERSE, Kind.ROLLBACK, Kind.FINALIZE)


def problems(findings: list[Finding]) -> set[tuple[int | None, Problem]]:
    return {(f.number, f.problem) for f in findings}


Rows = Sequence[tuple[Any, ...]]


def change(upserted: Rows, deleted: Rows = (), removed: Rows = ()) -> TableChange:
    return TableChange.of(table_digest(upserted), table_digest(deleted), table_digest(removed))


def nxt(prev: Checkpoint, kind: Kind, seq_to: int, tables: dict[str, TableChange] | None = None) -> Checkpoint:
    return next_checkpoint(prev, seq_to=seq_to, tables=tables or {}, kind=kind, at=T0, tool="t")


def forged(prev: Checkpoint, kind: Kind, seq_from: int, seq_to: int, **fields: Any) -> Checkpoint:
    """A record linked to ``prev`` and sealed, built by hand: what a writer that ignores the grammar stores."""
    draft = Checkpoint(
        number=prev.number + 1,
        kind=kind,
        seq_from=seq_from,
        seq_to=seq_to,
        tables=fields.pop("tables", {}),
        at=T0,
        tool="forger",
        prev_hash=prev.link_hash,
        **fields,
    )
    return seal(draft)[0]


def forward() -> list[Checkpoint]:
    """#1 genesis {1a, 2b, 3c} at seq 10; #2 a batch inserting 4d (11..15); #3 the cutover (16..20)."""
    first = genesis({"t": change([(1, "a"), (2, "b"), (3, "c")])}, seq_to=10, at=T0, tool="t")
    batch = nxt(first, Kind.BATCH, 15, {"t": change([(4, "d")])})
    return [first, batch, nxt(batch, Kind.CUTOVER, 20)]


def window(end: Kind = Kind.ROLLBACK) -> list[Checkpoint]:
    """The forward chain, then #4 reverse 1..3 (2b → 2B, 3 deleted), #5 reverse 4..4 (5e inserted) and #6 the
    window's end: a rollback whose final drain deletes 4 (5..5), or a finalize (empty)."""
    chain = forward()
    chain.append(nxt(chain[-1], Kind.REVERSE, 3, {"t": change([(2, "B")], [(3,)], [(2, "b"), (3, "c")])}))
    chain.append(nxt(chain[-1], Kind.REVERSE, 4, {"t": change([(5, "e")])}))
    if end is Kind.ROLLBACK:
        chain.append(nxt(chain[-1], Kind.ROLLBACK, 5, {"t": change([], [(4,)], [(4, "d")])}))
    else:
        chain.append(nxt(chain[-1], Kind.FINALIZE, 4))
    return chain


def ending_with(kind: Kind) -> Checkpoint:
    """A sealed checkpoint of ``kind`` at the head of a chain that obeys the grammar."""
    first, batch, cut = forward()
    reverse = nxt(cut, Kind.REVERSE, 2)
    made = {
        Kind.GENESIS: first,
        Kind.BATCH: batch,
        Kind.COMPACTION: compaction_of([first, batch], at=T0, tool="t"),
        Kind.CUTOVER: cut,
        Kind.REVERSE: reverse,
        Kind.ROLLBACK: nxt(reverse, Kind.ROLLBACK, 2),
        Kind.FINALIZE: nxt(reverse, Kind.FINALIZE, 2),
    }
    return made[kind]


# --- the grammar: next_checkpoint ------------------------------------------------------------------------


@pytest.mark.parametrize("after", list(Kind))
@pytest.mark.parametrize("kind", list(Kind))
def test_each_transition_is_allowed_or_refused_with_words(after: Kind, kind: Kind) -> None:
    prev = ending_with(after)
    assert prev.kind is after
    starts = 1 if after is Kind.CUTOVER and kind in WINDOW else prev.seq_to + 1
    seq_to = starts - 1 if kind is Kind.FINALIZE else starts
    if kind in ALLOWED[after]:
        made = nxt(prev, kind, seq_to)
        assert (made.number, made.kind, made.seq_from, made.seq_to) == (prev.number + 1, kind, starts, seq_to)
        assert made.prev_hash == prev.link_hash
        assert audit.verify([prev, made], whole=False) == []
        return
    assert audit.verify([prev, forged(prev, kind, starts, seq_to)], whole=False)  # the audit refuses it too
    with pytest.raises(CheckpointError) as refused:
        nxt(prev, kind, seq_to)
    assert refused.value.hint
    assert str(kind) in refused.value.message
    if after in (Kind.ROLLBACK, Kind.FINALIZE):
        assert f"ended with a {after} checkpoint" in refused.value.message


def test_the_reverse_journal_starts_at_one_after_the_cutover() -> None:
    cut = forward()[-1]
    assert cut.seq_to == 20
    empty = nxt(cut, Kind.REVERSE, 0)  # nothing written in PostgreSQL yet: an empty range
    assert (empty.seq_from, empty.seq_to) == (1, 0)
    assert (nxt(cut, Kind.ROLLBACK, 0).seq_from, nxt(cut, Kind.FINALIZE, 0).seq_from) == (1, 1)
    with pytest.raises(CheckpointError, match="behind"):
        nxt(cut, Kind.REVERSE, -1)
    first = nxt(cut, Kind.REVERSE, 7)
    second = nxt(first, Kind.REVERSE, 9)
    assert (second.seq_from, second.seq_to) == (8, 9)
    assert (nxt(second, Kind.REVERSE, 9).seq_from, nxt(second, Kind.REVERSE, 9).seq_to) == (10, 9)
    with pytest.raises(CheckpointError, match="behind"):
        nxt(second, Kind.ROLLBACK, 8)


def test_a_finalize_records_nothing() -> None:
    reverse = nxt(forward()[-1], Kind.REVERSE, 3)
    done = nxt(reverse, Kind.FINALIZE, 3)
    assert (done.seq_from, done.seq_to, done.tables) == (4, 3, {})
    with pytest.raises(CheckpointError, match="finalize") as ranged:
        nxt(reverse, Kind.FINALIZE, 4)
    assert ranged.value.hint
    with pytest.raises(CheckpointError, match="finalize"):
        nxt(reverse, Kind.FINALIZE, 3, {"t": change([(9, "z")])})


def test_compaction_cannot_stand_for_the_cutover_or_the_window() -> None:
    chain = window()
    compaction_of(chain[:2], at=T0, tool="t")  # the forward records before the cutover
    for upto in (3, 4, 6):
        with pytest.raises(CheckpointError, match="cutover") as refused:
            compaction_of(chain[:upto], at=T0, tool="t")
        assert refused.value.hint


# --- the audit: tampered reverse chains ------------------------------------------------------------------


def relinked(chain: list[Checkpoint], index: int, **changes: Any) -> list[Checkpoint]:
    """``chain`` with record ``index``'s fields changed, it and every later record resealed and relinked: every
    hash agrees, only the grammar or the ranges can tell."""
    out = chain[:index]
    for position, checkpoint in enumerate(chain[index:]):
        fields = changes if position == 0 else {}
        draft = msgspec.structs.replace(checkpoint, hash="", prev_hash=out[-1].link_hash, **fields)
        out.append(seal(draft)[0])
    return out


@pytest.mark.parametrize("end", [Kind.ROLLBACK, Kind.FINALIZE])
def test_a_whole_window_verifies_and_the_cutover_is_still_named(end: Kind, tmp_path: Path) -> None:
    chain = window(end)
    assert audit.verify(chain) == []
    path = tmp_path / "chain.jsonl"
    write_export(path, [Record.of(c) for c in chain])
    report = audit.report_file(path)
    assert (report.findings, report.cutover, report.head) == ([], 3, 6)
    assert audit.verify(chain[:4]) == []  # an open window: the cutover then reverse batches


def test_a_gap_or_an_overlap_in_the_reverse_journal_is_found() -> None:
    chain = window()
    cases = {
        "first reverse skips entry 1": (relinked(chain, 3, seq_from=2), {(4, Problem.SEQ_GAP)}),
        "first reverse continues SQLite's journal": (
            relinked(chain, 3, seq_from=21, seq_to=23),
            {(4, Problem.SEQ_GAP), (5, Problem.SEQ_OVERLAP)},  # the next one, from 4, is then behind it
        ),
        "first reverse starts at 0": (relinked(chain, 3, seq_from=0), {(4, Problem.SEQ_OVERLAP)}),
        "second reverse skips entry 4": (relinked(chain, 4, seq_from=5, seq_to=4), {(5, Problem.SEQ_GAP)}),
        "second reverse repeats entry 3": (relinked(chain, 4, seq_from=3), {(5, Problem.SEQ_OVERLAP)}),
        "rollback skips entry 5": (relinked(chain, 5, seq_from=6, seq_to=6), {(6, Problem.SEQ_GAP)}),
        "rollback repeats entry 4": (relinked(chain, 5, seq_from=4), {(6, Problem.SEQ_OVERLAP)}),
    }
    for name, (tampered, expected) in cases.items():
        assert problems(audit.verify(tampered)) == expected, name
    gap = audit.verify(relinked(chain, 3, seq_from=2))
    assert "reverse journal" in gap[0].detail


def test_a_forward_record_after_the_cutover_is_after_cutover() -> None:
    chain = window()
    cut, first = chain[2], chain[3]
    batch_after_cutover = [*chain[:3], forged(cut, Kind.BATCH, 21, 22)]
    assert problems(audit.verify(batch_after_cutover)) == {(4, Problem.AFTER_CUTOVER)}
    batch_in_window = [*chain[:4], forged(first, Kind.BATCH, 4, 4)]
    assert problems(audit.verify(batch_in_window)) == {(5, Problem.AFTER_CUTOVER)}
    second_cutover = [*chain[:4], forged(first, Kind.CUTOVER, 21, 21)]
    assert problems(audit.verify(second_cutover)) == {(5, Problem.AFTER_CUTOVER)}
    assert "reverse" in audit.verify(batch_in_window)[0].detail  # says what may follow instead
    relabelled = relinked(chain, 4, kind=Kind.BATCH)  # a reverse batch passed off as a forward one
    assert problems(audit.verify(relabelled)) == {(5, Problem.AFTER_CUTOVER)}


@pytest.mark.parametrize("end", [Kind.ROLLBACK, Kind.FINALIZE])
@pytest.mark.parametrize("kind", list(Kind))
def test_anything_after_a_rollback_or_finalize_is_after_end(end: Kind, kind: Kind) -> None:
    chain = window(end)
    last = chain[-1]
    seq_from = last.seq_to + 1
    found = audit.verify([*chain, forged(last, kind, seq_from, seq_from)])
    expected = {(7, Problem.AFTER_END)}
    if kind in (Kind.GENESIS, Kind.COMPACTION):
        expected.add((7, Problem.BAD_ROOT))
    assert problems(found) == expected
    assert all(str(end) in f.detail for f in found if f.problem is Problem.AFTER_END)


def test_a_reverse_record_before_the_cutover_is_found() -> None:
    first, batch, cut = forward()
    for kind in WINDOW:
        early = forged(batch, kind, 1, 1)
        assert problems(audit.verify([first, batch, early])) == {(3, Problem.BEFORE_CUTOVER)}, kind
        assert problems(audit.verify([first, forged(first, kind, 1, 0)])) == {(2, Problem.BEFORE_CUTOVER)}
    # A batch relabelled as reverse inside the forward chain: it alone is named, the real cutover after it is not.
    relabelled = relinked([first, batch, cut], 1, kind=Kind.REVERSE)
    assert problems(audit.verify(relabelled)) == {(2, Problem.BEFORE_CUTOVER)}


def test_a_record_cut_from_the_window_is_deleted_and_only_that() -> None:
    chain = window()
    assert problems(audit.verify(chain[:4] + chain[5:])) == {(6, Problem.DELETED)}
    assert problems(audit.verify(chain[:2] + chain[3:])) == {(4, Problem.DELETED)}  # the cutover itself
    assert audit.verify(chain[:5]) == []  # the newest cut off: only an anchor from outside can tell


def test_a_segment_from_inside_the_window_verifies_as_such() -> None:
    """What an anchor's check verifies: from the anchored record to the head, which may start in the window."""
    chain = window()
    assert audit.verify(chain[3:], whole=False) == []
    assert audit.verify(chain[4:], whole=False) == []
    late = forged(chain[4], Kind.BATCH, 5, 5)
    assert problems(audit.verify([chain[4], late], whole=False)) == {(6, Problem.AFTER_CUTOVER)}
    after = forged(chain[5], Kind.REVERSE, 6, 6)
    assert problems(audit.verify([chain[5], after], whole=False)) == {(7, Problem.AFTER_END)}


_WINDOW_RECORDS = [Record.of(c) for c in window()]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_byte_changed_in_a_window_body_is_found(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(_WINDOW_RECORDS) - 1))
    body = bytearray(_WINDOW_RECORDS[index].body)
    at = data.draw(st.integers(0, len(body) - 1))
    body[at] = data.draw(st.integers(0, 255).filter(lambda b: b != body[at]))
    tampered = list(_WINDOW_RECORDS)
    tampered[index] = Record(number=tampered[index].number, hash=tampered[index].hash, body=bytes(body))
    assert audit.verify(tampered)


def write_export(path: Path, records: list[Record]) -> None:
    """The export format, written without a database."""
    lines = [msgspec.json.encode({"number": r.number, "hash": r.hash, "body": r.body.decode()}) for r in records]
    head = {"number": records[-1].number, "hash": records[-1].hash, "count": len(records), "exported_at": "x"}
    lines.append(msgspec.json.encode({"head": head}))
    path.write_bytes(b"\n".join(lines) + b"\n")


# --- the ledger through the window -----------------------------------------------------------------------


def digest(rows: list[tuple[Any, ...]]) -> str:
    return table_digest(rows).hexdigest()


def test_the_ledger_adds_up_through_reverse_records_and_at_the_cutover() -> None:
    chain = window()
    at_cut = ledger.Figures(4, digest([(1, "a"), (2, "b"), (3, "c"), (4, "d")]), since=1)
    at_end = ledger.Figures(3, digest([(1, "a"), (2, "B"), (5, "e")]), since=1)
    cut = ledger.at_cutover(chain)
    assert cut is not None
    assert (cut.tables, cut.head) == ({"t": at_cut}, 3)
    end = ledger.at_end(chain)
    assert (end.tables, end.head, end.unknown, end.breaks) == ({"t": at_end}, 6, {}, {})
    assert ledger.add_up(chain) == end  # existing callers: the figures after the last record
    assert ledger.add_up(chain, through=3) == cut
    assert ledger.add_up(chain, through=4).tables["t"].rows == 3  # 2 updated, 3 deleted
    assert ledger.add_up(chain[:2] + chain[3:], through=3).head == 2  # never past it, even when it is missing
    streamed = ledger.at_cutover(Record.of(c) for c in chain)  # one pass over a stream, stopping at the cutover
    assert streamed == cut
    finalized = ledger.at_end(window(Kind.FINALIZE))
    assert finalized.tables["t"].rows == 4  # no final drain: 4 is still there


def test_the_ledger_at_the_cutover_needs_a_cutover() -> None:
    first, batch, _cut = forward()
    assert ledger.at_cutover([first, batch]) is None
    assert ledger.at_end([first, batch]).head == 2


def test_a_table_the_window_touches_first_cannot_be_added_up() -> None:
    chain = forward()
    other = nxt(chain[-1], Kind.REVERSE, 1, {"u": change([(1, "x")])})
    book = ledger.at_end([*chain, other])
    assert "checkpoint 4" in book.unknown["u"]
    assert "t" in book.tables


# --- the store and compaction ----------------------------------------------------------------------------


def cut_over(pg: psycopg.Connection[Any], batches: int = 4) -> list[Checkpoint]:
    """A stored chain: genesis, batches, and a cutover at its head."""
    chain = build_chain(pg, batches)
    chain.append(next_checkpoint(chain[-1], seq_to=chain[-1].seq_to + 3, tables={}, kind=Kind.CUTOVER))
    append(pg, chain[-1])
    return chain


def append(pg: psycopg.Connection[Any], checkpoint: Checkpoint) -> None:
    with pg.transaction():
        store.append(pg, checkpoint, SCHEMA)


def users(step: int) -> dict[str, TableChange]:
    written = table_digest([(step, f"pg{step}")])
    return {"users": TableChange.of(written, TableDigest(), table_digest([(step, f"user{step}")]))}


def test_the_store_appends_the_window_and_refuses_what_breaks_the_grammar(pg: psycopg.Connection[Any]) -> None:
    chain = cut_over(pg)
    cut = chain[-1]
    with pytest.raises(CheckpointError, match="reverse journal"), pg.transaction():
        store.append(pg, forged(cut, Kind.REVERSE, cut.seq_to + 1, cut.seq_to + 2))  # continues SQLite's journal
    with pytest.raises(CheckpointError, match="batch"), pg.transaction():
        store.append(pg, forged(cut, Kind.BATCH, cut.seq_to + 1, cut.seq_to + 2))
    first = next_checkpoint(cut, seq_to=2, tables=users(1), kind=Kind.REVERSE)
    append(pg, first)
    with pytest.raises(CheckpointError, match="covers"), pg.transaction():
        store.append(pg, forged(first, Kind.REVERSE, 4, 4))
    end = next_checkpoint(first, seq_to=2, tables={}, kind=Kind.ROLLBACK)
    append(pg, end)
    with pytest.raises(CheckpointError, match="ended with a rollback"), pg.transaction():
        store.append(pg, forged(end, Kind.REVERSE, 3, 3))
    assert store.latest(pg) == end
    assert audit.verify_db(pg) == []
    assert audit.report_db(pg).cutover == cut.number
    bare = build_chain(pg, 2, schema="early")
    with pytest.raises(CheckpointError, match="cutover"), pg.transaction():
        store.append(pg, forged(bare[-1], Kind.REVERSE, 1, 1), "early")


def test_compaction_keeps_the_cutover_and_the_window(pg: psycopg.Connection[Any]) -> None:
    chain = cut_over(pg, 4)
    cut = chain[-1]
    first = next_checkpoint(cut, seq_to=3, tables=users(2), kind=Kind.REVERSE)
    append(pg, first)
    append(pg, next_checkpoint(first, seq_to=5, tables=users(3), kind=Kind.REVERSE))
    before = ledger.at_cutover(store.iter_records(pg)), ledger.at_end(store.iter_records(pg))
    for upto in (cut.number, cut.number + 1):
        with pytest.raises(CheckpointUsageError, match="cutover") as refused:
            compaction.compact(pg, upto)
        assert "--upto" in refused.value.hint
    assert [c.number for c in store.read(pg)] == [1, 2, 3, 4, 5, 6, 7]
    base = compaction.compact(pg, cut.number - 1)
    assert base.kind is Kind.COMPACTION
    assert [c.number for c in store.read(pg)] == [4, 5, 6, 7]
    assert audit.verify_db(pg) == []
    assert audit.report_db(pg).cutover == cut.number
    after = ledger.at_cutover(store.iter_records(pg)), ledger.at_end(store.iter_records(pg))
    assert [sums(b) for b in before] == [sums(a) for a in after]  # the compaction adds up what it replaced


def sums(book: ledger.Ledger | None) -> dict[str, tuple[int, str]]:
    assert book is not None
    return {name: (f.rows, f.digest) for name, f in book.tables.items()}


def test_an_anchor_before_the_window_still_checks_the_chain(pg: psycopg.Connection[Any]) -> None:
    """The anchor kept in SQLite names a forward checkpoint; the segment from it runs into the window."""
    chain = cut_over(pg, 3)
    cut = chain[-1]
    anchor = Anchor(number=cut.number, hash=cut.hash, seq_to=cut.seq_to, root=chain[0].hash)
    first = next_checkpoint(cut, seq_to=2, tables=users(4), kind=Kind.REVERSE)
    append(pg, first)
    append(pg, next_checkpoint(first, seq_to=2, tables={}, kind=Kind.FINALIZE))
    assert check_anchor(pg, anchor) == []
    assert check_anchor(pg, anchor, tail_only=True) == []
    pg.execute("UPDATE replicator.checkpoints SET kind = 'batch' WHERE number = %s", (first.number,))
    assert problems(check_anchor(pg, anchor)) == {(first.number, Problem.EDITED)}
