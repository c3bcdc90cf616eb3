"""A consistent copy of the live SQLite file, taken through SQLite's online backup API.

Why not ``cp``: copying the file while the app writes can tear pages (and misses the WAL). The
backup API copies pages through a read transaction, so the copy is the database as of one commit.

How, and why each step:

* **Steps with pauses.** The copy goes ``pages_per_step`` pages at a time with a short sleep between
  steps, so in rollback-journal mode the app's writers get the lock back between steps. SQLite
  restarts a backup whose source another connection modified; after ``max_restarts`` restarts (a
  busy app) the rest is copied in one step, which is one read transaction: in WAL mode writers are
  not blocked by it at all, in rollback mode they wait for that one step. The result is always
  the state of one commit.
* **Temp name, then rename.** The copy is written as ``.<name>.partial`` and renamed only once it is
  complete (and verified, with ``verify``), so a file with the final name is always a whole backup.
* **Mode 0600.** The copy holds the application's data: created owner-only before any page lands.
* **Standalone file.** The copy is switched to ``journal_mode=DELETE``: one file, no ``-wal`` to
  forget; opening it read-only never changes its bytes, so the SHA-256 stays true.
* **Manifest.** ``<name>.json`` next to it: source path and size, the copy's size, SHA-256, page
  count and size, the source's journal mode, time, tool version, and the integrity_check result.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from replicator import __version__, files, log
from replicator.errors import ReplicatorError, UsageError
from replicator.progress import Progress
from triggers import source as sqlite_source

PAGES_PER_STEP = 256
STEP_SLEEP_S = 0.002
MAX_RESTARTS = 3
OTHER_DIR = "choose another output directory"


class BackupFailed(ReplicatorError):
    """The copy could not be made, or it failed its integrity check (the partial file is removed)."""


class BackupManifest(msgspec.Struct, frozen=True):
    source: str
    source_size: int
    """Bytes of the main database file when the backup started (the WAL is not counted)."""
    file: str
    """The copy's file name, in the same directory as the manifest."""
    size: int
    sha256: str
    page_size: int
    page_count: int
    journal_mode: str
    """The source's journal mode; the copy itself is always in DELETE mode (one file)."""
    created_at: str
    tool: str
    seconds: float
    steps: int
    restarts: int
    integrity_check: str | None = None
    """``ok`` when ``--verify`` ran and passed; None when not run."""


class BackupResult(msgspec.Struct, frozen=True):
    path: str
    manifest_path: str
    manifest: BackupManifest


class _Restarted(Exception):
    """The source changed under a stepped backup too often: switch to a single step."""


def backup(
    source: Path | str,
    out_dir: Path | str,
    verify: bool = False,
    *,
    pages_per_step: int = PAGES_PER_STEP,
    step_sleep_s: float = STEP_SLEEP_S,
    max_restarts: int = MAX_RESTARTS,
    busy_timeout_ms: int = sqlite_source.DEFAULT_BUSY_TIMEOUT_MS,
    progress: Progress | None = None,
) -> BackupResult:
    """Copy ``source`` into ``out_dir`` while the app runs; see the module docstring for the method.
    ``progress`` is told the pages copied (one task, named after the source file)."""
    source, out_dir = Path(source), Path(out_dir)
    stamp = datetime.now(UTC)
    name = f"{source.stem}-{stamp.strftime('%Y%m%dT%H%M%S%fZ')}.db"
    final, partial = out_dir / name, out_dir / f".{name}.partial"
    with files.writing(final, what="the backup", instead=OTHER_DIR):
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    bound = log.get("backup", source=str(source), out=str(final))
    started = time.monotonic()
    src = sqlite_source.connect(source, readonly=True, busy_timeout_ms=busy_timeout_ms)
    try:
        source_size = source.stat().st_size
        (journal_mode,) = src.execute("PRAGMA journal_mode").fetchone()
        _create_private(partial)
        try:
            steps, restarts = _copy(src, partial, pages_per_step, step_sleep_s, max_restarts, _Pages(progress, source))
            page_size, page_count = _finish_copy(partial)
            integrity = _integrity_check(partial) if verify else None
            size, digest = partial.stat().st_size, files.sha256_file(partial)
            files.fsync_path(partial)
            os.replace(partial, final)
            files.fsync_path(out_dir)
        except BaseException:
            _remove_partial(partial)
            raise
    except sqlite3.Error as exc:
        raise BackupFailed(
            f"backup of {source} failed: {exc}", hint=f"check free space in {out_dir} or {OTHER_DIR}"
        ) from None
    except OSError as exc:  # a full disk, a quota, a size limit: one line, the partial copy removed
        raise files.write_error(exc, final, what="the backup", instead=OTHER_DIR) from exc
    finally:
        src.close()
    manifest = BackupManifest(
        source=os.fspath(source.resolve()),
        source_size=source_size,
        file=name,
        size=size,
        sha256=digest,
        page_size=page_size,
        page_count=page_count,
        journal_mode=str(journal_mode),
        created_at=stamp.isoformat(timespec="seconds").replace("+00:00", "Z"),
        tool=f"replicator {__version__}",
        seconds=round(time.monotonic() - started, 3),
        steps=steps,
        restarts=restarts,
        integrity_check=integrity,
    )
    manifest_path = out_dir / f"{name}.json"
    with files.writing(manifest_path, what="the backup manifest", instead=OTHER_DIR):
        _write_private(manifest_path, msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n")
    bound.info("backup written", bytes=size, pages=page_count, sha256=digest, steps=steps, restarts=restarts)
    return BackupResult(path=os.fspath(final), manifest_path=os.fspath(manifest_path), manifest=manifest)


def _create_private(path: Path) -> None:
    """Create the file owner-only before SQLite opens it (SQLite keeps an existing file's mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` owner-only; a failed write leaves no half file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


class _Pages:
    """The copy's pages as one progress task: started at the first step, when SQLite tells the total."""

    def __init__(self, progress: Progress | None, source: Path) -> None:
        self.progress, self.task = progress, source.name
        self.started: float | None = None
        self.total = 0

    def step(self, remaining: int, total: int) -> None:
        if self.progress is None:
            return
        if self.started is None or total != self.total:  # the source grew: a restart counts anew
            self.started, self.total = time.monotonic(), total
            self.progress.start(self.task, total)
        self.progress.advance(self.task, total - remaining)

    def done(self) -> None:
        if self.progress is not None and self.started is not None:
            self.progress.finish(self.task, self.total, time.monotonic() - self.started)


def _progress(
    pages_per_step: int, sleep_s: float, max_restarts: int, counters: list[int], pages: _Pages
) -> Callable[..., None]:
    """Sleep between steps; count restarts (``remaining`` going up) and give up stepping after too many."""
    last = [-1]

    def progress(_status: int, remaining: int, total: int) -> None:
        counters[0] += 1
        pages.step(remaining, total)
        if last[0] >= 0 and remaining > last[0]:
            counters[1] += 1
            if counters[1] > max_restarts:
                raise _Restarted
        last[0] = remaining
        if remaining and sleep_s > 0:
            time.sleep(sleep_s)

    return progress


def _copy(
    src: sqlite3.Connection, dest_path: Path, pages_per_step: int, sleep_s: float, max_restarts: int, pages: _Pages
) -> tuple[int, int]:
    """Stepped copy; on too many restarts, one more attempt in a single step. Returns (steps, restarts)."""
    counters = [0, 0]
    dest = sqlite3.connect(dest_path, isolation_level=None)
    try:
        try:
            src.backup(
                dest,
                pages=max(1, pages_per_step),
                progress=_progress(pages_per_step, sleep_s, max_restarts, counters, pages),
            )
        except _Restarted:
            log.get("backup").info("source busy: copying the rest in one step", restarts=counters[1])
            src.backup(dest, pages=-1)
            counters[0] += 1
    finally:
        dest.close()
    pages.done()
    return counters[0], counters[1]


def _finish_copy(path: Path) -> tuple[int, int]:
    """Make the copy one self-contained file (DELETE journal mode) and read its geometry."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        (page_count,) = conn.execute("PRAGMA page_count").fetchone()
    finally:
        conn.close()
    return int(page_size), int(page_count)


def _integrity_check(path: Path) -> str:
    conn = sqlite_source.connect(path, readonly=True, check=False)
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:  # damage bad enough that the check itself stops
        rows = [str(exc)]
    finally:
        conn.close()
    if rows != ["ok"]:
        raise BackupFailed(
            f"the backup copy fails PRAGMA integrity_check: {'; '.join(rows[:5])}",
            hint="the source itself may be damaged: run PRAGMA integrity_check on it before anything else",
        )
    return "ok"


def _remove_partial(path: Path) -> None:
    for leftover in (path, Path(f"{path}-journal"), Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)


def check_manifest(manifest_path: Path | str) -> BackupManifest:
    """Re-hash a backup against its manifest (before a restore); raises when they differ."""
    manifest_path = Path(manifest_path)
    manifest = msgspec.json.decode(manifest_path.read_bytes(), type=BackupManifest)
    copy = manifest_path.parent / manifest.file
    if not copy.exists():
        raise UsageError(f"backup file {copy} named by {manifest_path} is missing", hint="restore it from elsewhere")
    actual = files.sha256_file(copy)
    if actual != manifest.sha256:
        raise BackupFailed(
            f"backup {copy} has SHA-256 {actual}, its manifest says {manifest.sha256}",
            hint="the copy changed after it was written: do not restore from it",
        )
    return manifest
