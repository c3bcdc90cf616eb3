"""Verify the checkpoint chain, export it for an auditor, verify an export offline, and compact it.

``verify`` returns every finding, each a typed record naming the checkpoint, never just the first:
an operator deciding whether to trust a migration needs the whole picture. What it checks:

* each body hashes to its stored hash (``edited``) and agrees with the store's copied columns;
* each record sits where its body says (``reordered``), once (``duplicate``);
* numbers have no holes (``deleted``), and the chain starts at a genesis or a compaction (``bad_root``);
* each ``prev_hash`` is its predecessor's link hash (``broken_link``);
* consecutive journal ranges neither overlap nor leave a gap (``seq_overlap``, ``seq_gap``);
* an unreadable last record is a torn write (``torn_tail``); an unreadable one before it is ``corrupt``;
* nothing follows a cutover checkpoint, the migration's last record (``after_cutover``).

An export is JSON Lines: one ``{"number", "hash", "body"}`` object per checkpoint (``body`` is the
canonical body text, so ``sha256(utf8(body)) == hash``), then ``{"head": {...}}`` naming the last
checkpoint and the count. An export without its head line was cut short (``torn_tail``).

Compaction replaces checkpoints ``first..upto`` with one record numbered ``upto`` that carries the
hash of the original checkpoint ``upto`` (its successor still points at it), their count, and a fold
of their hashes that an auditor holding an older export can recompute (:func:`verify_compaction`).

A chain alone cannot reveal that its newest records were cut off, or that it was rewritten whole
with fresh hashes. :func:`verify_against` closes that gap with an anchor kept elsewhere: an earlier
export, every record of which must still be present unchanged or be covered by the compaction.
:func:`check_anchor` does the same with a single :class:`Anchor`, the last checkpoint a writer saw
committed, which the daemon keeps outside PostgreSQL (in the SQLite file, with each journal prune):
the anchored checkpoint must still be there with its hash, and the chain from it to the head must
verify.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec
import structlog

from checkpoints.errors import ChainBroken, CheckpointError, CheckpointUsageError
from checkpoints.model import (
    ZERO_HASH,
    Checkpoint,
    Kind,
    Record,
    compaction_of,
    fold_hashes,
    format_time,
    hash_body,
)

if TYPE_CHECKING:
    import psycopg

log = structlog.get_logger().bind(component="checkpoints")


class Problem(enum.StrEnum):
    EDITED = "edited"
    BROKEN_LINK = "broken_link"
    DELETED = "deleted"
    REORDERED = "reordered"
    DUPLICATE = "duplicate"
    SEQ_OVERLAP = "seq_overlap"
    SEQ_GAP = "seq_gap"
    BAD_ROOT = "bad_root"
    BAD_COMPACTION = "bad_compaction"
    CORRUPT = "corrupt"
    TORN_TAIL = "torn_tail"
    HEAD_MISMATCH = "head_mismatch"
    AFTER_CUTOVER = "after_cutover"


class Finding(msgspec.Struct, frozen=True):
    """One thing wrong with the chain, named by the checkpoint it concerns (None: the file as a whole)."""

    number: int | None
    problem: Problem
    detail: str

    def __str__(self) -> str:
        where = f"checkpoint {self.number}" if self.number is not None else "export"
        return f"{where}: {self.problem}: {self.detail}"


class Head(msgspec.Struct, frozen=True):
    """The last line of an export: what the chain's head was when it was written."""

    number: int
    hash: str
    count: int
    exported_at: str


class Report(msgspec.Struct, frozen=True):
    """A verification's outcome: how much was checked, the head it ends at, and every finding."""

    count: int
    head: int | None
    head_hash: str | None
    findings: list[Finding]
    cutover: int | None = None
    """The number of the chain's cutover checkpoint: the migration is over (advice must fit that)."""

    @property
    def ok(self) -> bool:
        return not self.findings


def _report(records: Sequence[Record], findings: list[Finding], cutover: int | None) -> Report:
    last = records[-1] if records else None
    return Report(
        count=len(records),
        head=last.number if last else None,
        head_hash=last.hash if last else None,
        findings=findings,
        cutover=cutover,
    )


#: What a damaged line can raise while being parsed (invalid UTF-8, a lone surrogate escape...).
_UNREADABLE = (msgspec.DecodeError, msgspec.ValidationError, UnicodeError)


class _Line(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    number: int
    hash: str
    body: str


class _HeadLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    head: Head


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
    for prev, cur in itertools.pairwise(ordered):
        _check_link(prev, cur, findings)
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
    if prev.kind is Kind.CUTOVER:
        findings.append(
            Finding(
                cur.number,
                Problem.AFTER_CUTOVER,
                f"recorded after the cutover checkpoint {prev.number}: a migration applies nothing after its cutover",
            )
        )
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
    if cur.seq_to < cur.seq_from - 1:
        findings.append(
            Finding(
                cur.number, Problem.SEQ_OVERLAP, f"journal range {cur.seq_from}..{cur.seq_to} ends before it starts"
            )
        )
    if cur.seq_from > prev.seq_to + 1:
        findings.append(
            Finding(
                cur.number,
                Problem.SEQ_GAP,
                f"journal entries {prev.seq_to + 1}..{cur.seq_from - 1} are in no checkpoint "
                f"(checkpoint {prev.number} ends at {prev.seq_to}, this starts at {cur.seq_from})",
            )
        )
    elif cur.seq_from < prev.seq_to + 1:
        findings.append(
            Finding(
                cur.number,
                Problem.SEQ_OVERLAP,
                f"journal entries {cur.seq_from}..{min(prev.seq_to, cur.seq_to)} were already in checkpoint "
                f"{prev.number} (which ends at {prev.seq_to})",
            )
        )


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


class Anchor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A checkpoint its writer saw committed, kept outside PostgreSQL: the chain must still hold it.

    Only a copy kept elsewhere reveals a chain whose newest records were cut off (it still verifies
    on its own). The daemon stores one in the SQLite file's meta table with every journal prune,
    which it only does after the checkpoint committed, so the chain's head is never below it.
    """

    number: int
    hash: str
    seq_to: int
    root: str
    """Hash of the chain's first record when anchored: a chain started since (``snapshot --replace``)
    begins with another genesis, and the anchor is then about a chain that no longer exists."""

    def encode(self) -> str:
        return msgspec.json.encode(self).decode()

    @classmethod
    def decode(cls, text: str) -> Anchor:
        try:
            return msgspec.json.decode(text, type=cls)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ChainBroken(
                f"the anchor kept in the source is unreadable: {exc}",
                hint="it was edited by hand; the daemon rewrites it at its next prune once the chain verifies",
            ) from None


ANCHOR_TAIL: Final = 1_000
"""How many of the newest checkpoints :func:`check_anchor` verifies with ``tail_only`` (``status``)."""


def check_anchor(
    conn: psycopg.Connection[Any], anchor: Anchor, *, schema: str | None = None, tail_only: bool = False
) -> list[Finding]:
    """Findings about the stored chain against ``anchor``: cut off below it, its record rewritten or
    swapped, or the segment from it to the head not verifying (``tail_only``: only the anchored
    record and the newest :data:`ANCHOR_TAIL` checkpoints, for a command run often).

    Nothing is found about a chain the anchor does not describe: an empty one (a snapshot is due),
    or one that starts with another genesis (``snapshot --replace`` started it; the daemon anchors
    it at its next prune).
    """
    from checkpoints import store

    schema = schema or store.DEFAULT_SCHEMA
    low, high = store.bounds(conn, schema=schema)
    if low is None or high is None:
        return []
    first = next(store.iter_records(conn, until=low, schema=schema), None)
    root = _decoded(first)
    if root is None or (root.kind is Kind.GENESIS and first is not None and first.hash != anchor.root):
        return []
    if high < anchor.number:
        span = (
            f"checkpoint {high + 1} is" if high + 1 == anchor.number else f"checkpoints {high + 1}..{anchor.number} are"
        )
        return [
            Finding(
                anchor.number,
                Problem.DELETED,
                f"{span} missing: the source's anchor records checkpoint {anchor.number} (journal seq "
                f"{anchor.seq_to}) as committed, but the chain ends at checkpoint {high}",
            )
        ]
    if root.compaction is not None and root.compaction.last >= anchor.number:
        if anchor.number == root.number and root.compaction.head_hash != anchor.hash:
            return [Finding(anchor.number, Problem.EDITED, "the compaction's head_hash is not the anchored hash")]
        return verify(store.iter_records(conn, since=max(low, high - ANCHOR_TAIL), schema=schema), whole=False)
    since = max(anchor.number, high - ANCHOR_TAIL) if tail_only else anchor.number
    findings = (
        []
        if since == anchor.number
        else _with_anchor(store.iter_records(conn, since=anchor.number - 1, until=anchor.number, schema=schema), anchor)
    )
    # From the anchored record's predecessor: its link to the anchored one is checked too.
    tail = store.iter_records(conn, since=max(0, since - 2), schema=schema)
    return findings + _with_anchor(tail, anchor, covered=since == anchor.number)


def _decoded(record: Record | None) -> Checkpoint | None:
    if record is None:
        return None
    try:
        return record.decode()
    except CheckpointError:
        return None  # verify names it


def _with_anchor(records: Iterable[Record], anchor: Anchor, *, covered: bool = True) -> list[Finding]:
    """Verify a segment of the chain; the anchored checkpoint in it (``covered``: it must be) must
    still carry the anchored hash."""
    findings: list[Finding] = []
    seen = False

    def watched() -> Iterator[Record]:
        nonlocal seen
        for record in records:
            if record.number == anchor.number:
                seen = True
                if record.hash != anchor.hash:
                    findings.append(
                        Finding(
                            anchor.number,
                            Problem.EDITED,
                            f"hash {record.hash[:12]}… is not the {anchor.hash[:12]}… the source's anchor "
                            "recorded when it was committed: rewritten or swapped",
                        )
                    )
            yield record

    segment = verify(watched(), whole=False)
    if covered and not seen:
        findings.append(Finding(anchor.number, Problem.DELETED, "the checkpoint the source's anchor records is gone"))
    return findings + segment


class _Tally:
    """Passes records through, counting them and remembering the last: a report's count and head."""

    def __init__(self, records: Iterable[Record]) -> None:
        self._records = records
        self.count = 0
        self.last: Record | None = None

    def __iter__(self) -> Iterator[Record]:
        for record in self._records:
            self.count += 1
            self.last = record
            yield record

    def report(self, findings: list[Finding], cutover: int | None = None) -> Report:
        last = self.last
        return Report(
            count=self.count,
            head=last.number if last else None,
            head_hash=last.hash if last else None,
            findings=findings,
            cutover=cutover,
        )


def verify_db(conn: psycopg.Connection[Any], *, schema: str | None = None) -> list[Finding]:
    """Verify the chain stored in PostgreSQL."""
    return report_db(conn, schema=schema).findings


def report_db(conn: psycopg.Connection[Any], *, schema: str | None = None, against: Path | None = None) -> Report:
    """Verify the stored chain and, given an earlier export, that nothing in it was cut off or rewritten."""
    from checkpoints import store

    schema = schema or store.DEFAULT_SCHEMA
    tally = _Tally(store.iter_records(conn, schema=schema))
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


def _write_durably(path: Path, lines: Iterable[bytes]) -> None:
    """temp file → fsync → rename → fsync the directory: a crash leaves the old file or the new, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # private like every export (a stale temp file would keep its mode)
        with os.fdopen(fd, "wb") as out:
            for line in lines:
                out.write(line)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def export(conn: psycopg.Connection[Any], path: Path, *, schema: str | None = None) -> Head:
    """Write the whole chain to ``path`` as JSON Lines plus a head line, streaming; returns the head."""
    from checkpoints import store

    tally = _Tally(store.iter_records(conn, schema=schema or store.DEFAULT_SCHEMA))
    exported_at = format_time(dt.datetime.now(dt.UTC))
    encoder = msgspec.json.Encoder()
    heads: list[Head] = []

    def lines() -> Iterator[bytes]:
        for r in tally:
            try:
                body = r.body.decode("utf-8")
            except UnicodeDecodeError:
                raise ChainBroken(
                    f"checkpoint {r.number}'s stored body is not UTF-8", hint="run 'replicator checkpoints verify'"
                ) from None
            yield encoder.encode(_Line(number=r.number, hash=r.hash, body=body)) + b"\n"
        if tally.last is None:
            raise CheckpointError("there are no checkpoints to export", hint="the snapshot writes the first one")
        heads.append(Head(number=tally.last.number, hash=tally.last.hash, count=tally.count, exported_at=exported_at))
        yield encoder.encode(_HeadLine(head=heads[0])) + b"\n"

    try:
        _write_durably(Path(path), lines())
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror}", hint="check the path and free space") from None
    log.info("checkpoints exported", path=str(path), count=heads[0].count, head=heads[0].number)
    return heads[0]


def read_file(path: Path) -> tuple[list[Record], Head | None, list[Finding]]:
    """The records and head line of an export, and findings about lines that cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}", hint="check the path") from None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    records: list[Record] = []
    head: Head | None = None
    findings: list[Finding] = []
    line_decoder = msgspec.json.Decoder(_Line)
    head_decoder = msgspec.json.Decoder(_HeadLine)
    for index, line in enumerate(lines, start=1):
        is_last = index == len(lines)
        if head is not None:
            findings.append(Finding(None, Problem.CORRUPT, f"line {index} follows the head line"))
            continue
        try:
            item = line_decoder.decode(line)
            records.append(Record(number=item.number, hash=item.hash, body=item.body.encode("utf-8")))
            continue
        except _UNREADABLE:
            pass
        try:
            head = head_decoder.decode(line).head
        except _UNREADABLE:
            after = f" after checkpoint {records[-1].number}" if records else ""
            problem = Problem.TORN_TAIL if is_last else Problem.CORRUPT
            findings.append(Finding(None, problem, f"line {index}{after} is not a checkpoint or head line"))
    return records, head, findings


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


def compact(
    conn: psycopg.Connection[Any],
    upto: int,
    *,
    schema: str | None = None,
    at: str | None = None,
    tool: str | None = None,
) -> Checkpoint:
    """Replace checkpoints numbered ``upto`` and below with one compaction record, in one transaction.

    Refuses a chain that does not verify (compacting would hide the evidence) and keeps at least
    the head after the compaction, so the compaction record's head_hash stays bound by a successor.
    Appends wait for the table lock meanwhile rather than fail.
    """
    from checkpoints import store

    schema = schema or store.DEFAULT_SCHEMA
    with conn.transaction():
        store.lock(conn, schema=schema)
        tally = _Tally(store.iter_records(conn, schema=schema))
        findings = verify(tally)
        if findings:
            raise ChainBroken(
                f"refusing to compact a chain with {len(findings)} finding(s), first: {findings[0]}",
                hint="run 'replicator checkpoints verify' and export the chain for investigation first",
            )
        replaced = store.read(conn, until=upto, schema=schema)
        _check_upto(replaced, tally.last.number if tally.last else None, upto)
        compaction = compaction_of(replaced, at=at, tool=tool)
        removed = store.replace_prefix(conn, upto, compaction, schema=schema)
    log.info("checkpoints compacted", upto=upto, removed=removed)
    return compaction


def _check_upto(replaced: Sequence[Checkpoint], head: int | None, upto: int) -> None:
    if head is None:
        raise CheckpointUsageError("there are no checkpoints to compact", hint="the snapshot writes the first one")
    if upto >= head:
        raise CheckpointUsageError(
            f"cannot compact up to {upto}: the head is checkpoint {head} and must stay",
            hint=f"pass --upto {head - 1} or less",
        )
    if len(replaced) < 2:
        first = f"{replaced[0].number} ({replaced[0].kind})" if replaced else "above it"
        raise CheckpointUsageError(
            f"nothing to compact up to {upto}: the chain already starts at {first}",
            hint=f"pass --upto between the first checkpoint + 1 and {head - 1}",
        )
