"""The chain's export for an auditor, and reading it back.

An export is JSON Lines: one ``{"number", "hash", "body"}`` object per checkpoint (``body`` is the
canonical body text, so ``sha256(utf8(body)) == hash``), then ``{"head": {...}}`` naming the last
checkpoint and the count. An export without its head line was cut short (``torn_tail``).
The file is written durably (temp file, fsync, rename) and private (0600); :func:`read_file` names every
line it cannot read instead of stopping at the first (:mod:`checkpoints.audit` verifies what it read).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from checkpoints.errors import ChainBroken, CheckpointError
from checkpoints.findings import Finding, Problem, Tally
from checkpoints.model import Record, format_time

if TYPE_CHECKING:
    import psycopg

log = structlog.get_logger().bind(component="checkpoints")


class Head(msgspec.Struct, frozen=True):
    """The last line of an export: what the chain's head was when it was written."""

    number: int
    hash: str
    count: int
    exported_at: str


#: What a damaged line can raise while being parsed (invalid UTF-8, a lone surrogate escape...).
_UNREADABLE = (msgspec.DecodeError, msgspec.ValidationError, UnicodeError)


class _Line(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    number: int
    hash: str
    body: str


class _HeadLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    head: Head


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

    tally = Tally(store.iter_records(conn, schema=schema or store.DEFAULT_SCHEMA))
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
