"""Verify the checkpoint chain: as stored in PostgreSQL, as exported (offline), and against an earlier export.

``verify`` returns every finding, each a typed record naming the checkpoint, never just the first:
an operator deciding whether to trust a migration needs the whole picture. What it checks:

* each body hashes to its stored hash (``edited``) and agrees with the store's copied columns;
* each record sits where its body says (``reordered``), once (``duplicate``);
* numbers have no holes (``deleted``), and the chain starts at a genesis or a compaction (``bad_root``);
* each ``prev_hash`` is its predecessor's link hash (``broken_link``);
* consecutive journal ranges neither overlap nor leave a gap (``seq_overlap``, ``seq_gap``): in SQLite's
  journal up to the cutover, then in PostgreSQL's reverse journal, which starts at 1 right after it;
* an unreadable last record is a torn write (``torn_tail``); an unreadable one before it is ``corrupt``;
* the chain's grammar (:data:`checkpoints.model.FOLLOWERS`): after the cutover only the rollback window's
  reverse, rollback or finalize records (``after_cutover``), none of them before a cutover
  (``before_cutover``), and nothing after a rollback or finalize, the chain's last record (``after_end``).

A chain alone cannot reveal that its newest records were cut off, or that it was rewritten whole
with fresh hashes. :func:`verify_against` closes that gap with an anchor kept elsewhere: an earlier
export, every record of which must still be present unchanged or be covered by the compaction.
:func:`checkpoints.anchor.check_anchor` does the same with a single anchor kept in the SQLite file.

The export's format is :mod:`checkpoints.exportfile`, compaction :mod:`checkpoints.compaction`; what every
check returns, :mod:`checkpoints.findings`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from checkpoints.errors import CheckpointError
from checkpoints.exportfile import read_file
from checkpoints.findings import Finding, Problem, Report, Tally
from checkpoints.model import (
    CUT_OVER_KINDS,
    ENDING_KINDS,
    REVERSE_KINDS,
    ZERO_HASH,
    Checkpoint,
    Kind,
    Record,
    fold_hashes,
    hash_body,
    seq_from_after,
)

if TYPE_CHECKING:
    import psycopg


def _report(records: Sequence[Record], findings: list[Finding], cutover: int | None) -> Report:
    last = records[-1] if records else None
    return Report(
        count=len(records),
        head=last.number if last else None,
        head_hash=last.hash if last else None,
        findings=findings,
        cutover=cutover,
    )


def verify(items: Iterable[Record | Checkpoint], *, whole: bool = True) -> list[Finding]:
    """Every finding about a chain given in stored order; an empty list means it verifies.

    ``items`` is consumed once, as a stream: bodies are hashed and dropped, and only each
    checkpoint's chain fields are kept, so a long chain costs hundreds of bytes per checkpoint.
    ``whole=False`` checks a segment (from an anchor to the head): its first record need not be a root.
    """
    return _verify(items, whole)[0]


def _verify(items: Iterable[Record | Checkpoint], whole: bool) -> tuple[list[Finding], int | None]:
    """:func:`verify`'s findings, and the number of the first cutover checkpoint (None: none)."""
    findings: list[Finding] = []
    decoded: list[Checkpoint] = []
    pending: Record | None = None
    for item in items:
        record = item if isinstance(item, Record) else Record.of(item)
        if pending is not None:
            _keep(_check_record(pending, False, findings), decoded)
        pending = record
    if pending is not None:
        _keep(_check_record(pending, True, findings), decoded)
    for before, after in itertools.pairwise(decoded):
        if after.number == before.number:
            findings.append(Finding(after.number, Problem.DUPLICATE, "stored twice"))
        elif after.number < before.number:
            findings.append(Finding(after.number, Problem.REORDERED, f"stored after checkpoint {before.number}"))
    chain: dict[int, Checkpoint] = {}
    for checkpoint in decoded:
        chain.setdefault(checkpoint.number, checkpoint)
    ordered = [chain[number] for number in sorted(chain)]
    if ordered and whole:
        _check_root(ordered[0], findings)
    window = _Window(ordered[0]) if ordered else None
    for prev, cur in itertools.pairwise(ordered):
        _check_link(prev, cur, findings)
        if window is not None:
            window.check(cur, findings, adjacent=cur.number == prev.number + 1)
    return findings, next((c.number for c in ordered if c.kind is Kind.CUTOVER), None)


def _keep(checkpoint: Checkpoint | None, decoded: list[Checkpoint]) -> None:
    if checkpoint is not None:
        decoded.append(checkpoint)


def _check_record(record: Record, is_last: bool, findings: list[Finding]) -> Checkpoint | None:
    try:
        checkpoint = record.decode()
    except CheckpointError as exc:
        problem = Problem.TORN_TAIL if is_last else Problem.CORRUPT
        findings.append(Finding(record.number, problem, f"body cannot be read: {exc.message}"))
        return None
    actual = hash_body(record.body)
    if actual != record.hash:
        findings.append(
            Finding(record.number, Problem.EDITED, f"body hashes to {actual[:12]}…, stored hash is {record.hash[:12]}…")
        )
    if checkpoint.number != record.number:
        findings.append(
            Finding(record.number, Problem.REORDERED, f"stored as {record.number} but its body is {checkpoint.number}")
        )
    for column, value in record.columns.items():
        expected = getattr(checkpoint, column, None)
        if str(value) != str(expected):
            findings.append(
                Finding(checkpoint.number, Problem.EDITED, f"column {column} is {value!r}, its body says {expected!r}")
            )
    # Links are judged on what the body really hashes to, so an edit shows at its successor too.
    # The per-table changes play no part in the chain checks: drop them to keep memory small.
    return msgspec.structs.replace(checkpoint, hash=actual, tables={})


def _check_root(root: Checkpoint, findings: list[Finding]) -> None:
    if root.prev_hash != ZERO_HASH:
        findings.append(
            Finding(root.number, Problem.BROKEN_LINK, "the chain's first record must have a zero prev_hash")
        )
    if root.kind is Kind.GENESIS:
        if root.number != 1:
            findings.append(Finding(root.number, Problem.BAD_ROOT, "a genesis checkpoint must be number 1"))
        return
    if root.kind is Kind.COMPACTION and root.compaction is not None:
        c = root.compaction
        if c.first != 1:
            findings.append(Finding(root.number, Problem.DELETED, f"checkpoints 1..{c.first - 1} are missing"))
        if c.last != root.number or c.count != c.last - c.first + 1 or c.first > c.last:
            findings.append(
                Finding(
                    root.number,
                    Problem.BAD_COMPACTION,
                    f"stands for {c.first}..{c.last} ({c.count} checkpoints) but is numbered {root.number}",
                )
            )
        return
    findings.append(
        Finding(
            root.number,
            Problem.DELETED,
            f"the chain starts at {root.number} ({root.kind}): checkpoints 1..{root.number - 1} are missing "
            "and no compaction stands for them",
        )
    )


def _check_link(prev: Checkpoint, cur: Checkpoint, findings: list[Finding]) -> None:
    if cur.kind in (Kind.GENESIS, Kind.COMPACTION):
        findings.append(Finding(cur.number, Problem.BAD_ROOT, f"a {cur.kind} checkpoint can only start the chain"))
    if cur.number != prev.number + 1:
        # The hole is the finding; the link and seq range across it cannot hold and would only repeat it.
        span = str(prev.number + 1) if cur.number == prev.number + 2 else f"{prev.number + 1}..{cur.number - 1}"
        findings.append(Finding(cur.number, Problem.DELETED, f"checkpoint {span} before it is missing"))
        return
    if cur.prev_hash != prev.link_hash:
        findings.append(
            Finding(
                cur.number,
                Problem.BROKEN_LINK,
                f"prev_hash {cur.prev_hash[:12]}… is not checkpoint {prev.number}'s hash {prev.link_hash[:12]}…",
            )
        )
    _check_range(prev, cur, findings)


class _Window:
    """Where the chain stands in its grammar (:data:`checkpoints.model.FOLLOWERS`): before the cutover, in the
    rollback window ``opened`` by it, or ``closed`` by a rollback or finalize. Each record out of place is
    named by what it breaks; it does not move the chain on, so what follows it is judged as if it were absent.
    """

    def __init__(self, first: Checkpoint) -> None:
        # A segment (from an anchor) may start inside the window, or at its end.
        self.opened = first if first.kind in CUT_OVER_KINDS else None
        self.closed = first if first.kind in ENDING_KINDS else None

    def check(self, cur: Checkpoint, findings: list[Finding], *, adjacent: bool) -> None:
        if self.closed is not None:
            findings.append(
                Finding(
                    cur.number,
                    Problem.AFTER_END,
                    f"a {cur.kind} recorded after the {self.closed.kind} checkpoint {self.closed.number}, which "
                    "ended the rollback window and the chain: nothing may follow it",
                )
            )
        elif self.opened is not None:
            if cur.kind not in REVERSE_KINDS:
                where = (
                    f"the cutover checkpoint {self.opened.number}"
                    if self.opened.kind is Kind.CUTOVER
                    else f"the cutover (in its rollback window, at checkpoint {self.opened.number})"
                )
                findings.append(
                    Finding(
                        cur.number,
                        Problem.AFTER_CUTOVER,
                        f"a {cur.kind} recorded after {where}: a migration applies nothing after its cutover, "
                        "where only the rollback window's reverse, rollback or finalize records follow",
                    )
                )
            elif cur.kind in ENDING_KINDS:
                self.closed = cur
        elif cur.kind is Kind.CUTOVER:
            self.opened = cur
        elif cur.kind in REVERSE_KINDS:
            if adjacent:
                findings.append(
                    Finding(
                        cur.number,
                        Problem.BEFORE_CUTOVER,
                        f"a {cur.kind} recorded before any cutover checkpoint: the rollback window opens only after "
                        "the cutover",
                    )
                )
            else:  # the cutover may be in the hole before it, which is the finding
                self.opened = cur
                self.closed = cur if cur.kind in ENDING_KINDS else None


def _check_range(prev: Checkpoint, cur: Checkpoint, findings: list[Finding]) -> None:
    """Contiguous ranges in each journal: SQLite's up to the cutover, PostgreSQL's reverse journal after it."""
    if cur.seq_to < cur.seq_from - 1:
        findings.append(
            Finding(
                cur.number, Problem.SEQ_OVERLAP, f"journal range {cur.seq_from}..{cur.seq_to} ends before it starts"
            )
        )
    expected = seq_from_after(prev, cur.kind)
    if expected is None:
        return  # across the journals other than at the cutover: the grammar's finding says it
    opens = cur.kind in REVERSE_KINDS and prev.kind not in REVERSE_KINDS
    journal = "reverse journal entries" if cur.kind in REVERSE_KINDS else "journal entries"
    before = (
        f"the reverse journal starts at 1 after checkpoint {prev.number}"
        if opens
        else f"checkpoint {prev.number} ends at {prev.seq_to}"
    )
    if cur.seq_from > expected:
        findings.append(
            Finding(
                cur.number,
                Problem.SEQ_GAP,
                f"{journal} {expected}..{cur.seq_from - 1} are in no checkpoint ({before}, this starts at "
                f"{cur.seq_from})",
            )
        )
    elif cur.seq_from < expected:
        detail = (
            f"its range starts at {cur.seq_from}, before the reverse journal's first entry 1 (which opens after "
            f"checkpoint {prev.number})"
            if opens
            else f"{journal} {cur.seq_from}..{min(prev.seq_to, cur.seq_to)} were already in checkpoint "
            f"{prev.number} (which ends at {prev.seq_to})"
        )
        findings.append(Finding(cur.number, Problem.SEQ_OVERLAP, detail))


def verify_compaction(base: Checkpoint, replaced: Iterable[Record | Checkpoint]) -> list[Finding]:
    """Check a compaction record against the checkpoints it replaced, e.g. from an export made before."""
    if base.kind is not Kind.COMPACTION or base.compaction is None:
        return [Finding(base.number, Problem.BAD_COMPACTION, "not a compaction checkpoint")]
    c = base.compaction
    old = [item if isinstance(item, Record) else Record.of(item) for item in replaced]
    old = [r for r in old if c.first <= r.number <= c.last]
    findings = verify(old)
    if [r.number for r in old] != list(range(c.first, c.last + 1)):
        findings.append(
            Finding(base.number, Problem.BAD_COMPACTION, f"the archive does not hold all of {c.first}..{c.last}")
        )
        return findings
    if fold_hashes([r.hash for r in old]) != c.hashes_digest:
        findings.append(
            Finding(base.number, Problem.BAD_COMPACTION, "the replaced hashes do not fold to hashes_digest")
        )
    if old[-1].hash != c.head_hash:
        findings.append(Finding(base.number, Problem.BAD_COMPACTION, f"head_hash is not checkpoint {c.last}'s hash"))
    return findings


def verify_against(current: Iterable[Record | Checkpoint], archived: Sequence[Record | Checkpoint]) -> list[Finding]:
    """Compare a chain with an earlier export of it: the check that needs an anchor from outside.

    A chain alone cannot show that its newest checkpoints were cut off, or that the whole chain was
    rewritten with fresh hashes; an export kept elsewhere can. Every archived checkpoint must still
    be there with the same hash, or be accounted for by the current compaction record.
    """
    old = [item if isinstance(item, Record) else Record.of(item) for item in archived]
    findings: list[Finding] = []
    hashes: dict[int, str] = {}
    base: Checkpoint | None = None
    for item in current:
        record = item if isinstance(item, Record) else Record.of(item)
        if not hashes:
            try:
                base = record.decode()
            except CheckpointError:
                base = None
        hashes[record.number] = record.hash
    compaction = base.compaction if base is not None else None
    cut = compaction.last if compaction is not None else 0
    for record in old:
        if record.number < cut:
            continue
        if compaction is not None and record.number == cut:
            # The export holds either the original checkpoint or this very compaction record.
            if record.hash not in (compaction.head_hash, hashes.get(cut)):
                findings.append(
                    Finding(
                        cut, Problem.EDITED, "the compaction's head_hash is not this checkpoint's hash in the export"
                    )
                )
            continue
        present = hashes.get(record.number)
        if present is None:
            findings.append(Finding(record.number, Problem.DELETED, "in the export, but no longer in the chain"))
        elif present != record.hash:
            findings.append(
                Finding(
                    record.number, Problem.EDITED, f"hash {present[:12]}… differs from the export's {record.hash[:12]}…"
                )
            )
    if base is not None and compaction is not None and old and old[0].number <= compaction.first:
        findings.extend(verify_compaction(base, old))
    return findings


def verify_db(conn: psycopg.Connection[Any], *, schema: str | None = None) -> list[Finding]:
    """Verify the chain stored in PostgreSQL."""
    return report_db(conn, schema=schema).findings


def report_db(conn: psycopg.Connection[Any], *, schema: str | None = None, against: Path | None = None) -> Report:
    """Verify the stored chain and, given an earlier export, that nothing in it was cut off or rewritten."""
    from checkpoints import store

    schema = schema or store.DEFAULT_SCHEMA
    tally = Tally(store.iter_records(conn, schema=schema))
    findings, cutover = _verify(tally, True)
    if against is not None:
        findings += _against(store.iter_records(conn, schema=schema), against)
    return tally.report(findings, cutover)


def _against(records: Iterable[Record], path: Path | None) -> list[Finding]:
    if path is None:
        return []
    archived, _, unreadable = read_file(path)
    return [
        *(msgspec.structs.replace(f, detail=f"{path}: {f.detail}") for f in unreadable),
        *verify_against(records, archived),
    ]


def verify_file(path: Path) -> list[Finding]:
    """Verify an export offline: no database, nothing but this package."""
    return report_file(path).findings


def report_file(path: Path, *, against: Path | None = None) -> Report:
    """Verify an export offline and, given an earlier export, that the later one still contains it."""
    records, head, findings = read_file(path)
    findings.extend(_against(records, against))
    chain, cutover = _verify(records, True)
    findings.extend(chain)
    if head is None:
        if not any(f.problem is Problem.TORN_TAIL for f in findings):
            where = f"after checkpoint {records[-1].number}" if records else "before any checkpoint"
            findings.append(Finding(None, Problem.TORN_TAIL, f"the export ends {where} without its head line"))
    elif not records:
        findings.append(
            Finding(None, Problem.HEAD_MISMATCH, f"head names checkpoint {head.number} but none are present")
        )
    else:
        last = records[-1]
        if (head.number, head.hash, head.count) != (last.number, last.hash, len(records)):
            findings.append(
                Finding(
                    head.number,
                    Problem.HEAD_MISMATCH,
                    f"head says {head.count} checkpoints ending at {head.number} ({head.hash[:12]}…), "
                    f"the file holds {len(records)} ending at {last.number} ({last.hash[:12]}…)",
                )
            )
    return _report(records, findings, cutover)
