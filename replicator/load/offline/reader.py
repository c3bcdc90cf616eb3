"""Reading an export, from its directory or its tar: the files as binary streams, a table's rows decoded.

Nothing here trusts the files: a line that is not a row of its table raises ``BadRow`` (table and
line); the checksums and the rest are ``verifier``'s.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import msgspec

from replicator import files
from replicator.errors import ReplicatorError, UsageError
from replicator.load.offline.codec import BadValue, decode_value
from replicator.load.offline.manifest import TableEntry


class Reader:
    """Files of an export, from a directory or a tar, as binary streams."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        if path.is_file():
            try:
                self._tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed by __exit__
            except tarfile.TarError as exc:
                raise UsageError(f"{path} is neither an export directory nor a tar: {exc}", hint="") from None
        elif not path.is_dir():
            raise UsageError(f"no export at {path}", hint="pass the directory (or .tar) that export wrote")

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tar is not None:
            self._tar.close()

    def names(self) -> set[str]:
        if self._tar is not None:
            return {m.name for m in self._tar.getmembers() if m.isfile()}
        return {p.name for p in self.path.iterdir() if p.is_file()}

    def open(self, name: str) -> IO[bytes]:
        if self._tar is not None:
            handle = self._tar.extractfile(name)
            if handle is None:
                raise FileNotFoundError(name)
            return handle
        return (self.path / name).open("rb")

    def sha256(self, name: str) -> str:
        with self.open(name) as handle:
            return files.sha256_of(handle)

    def lines(self, name: str) -> Iterator[bytes]:
        with self.open(name) as handle:
            yield from handle


def iter_rows(
    reader: Reader, entry: TableEntry, columns: Sequence[str] | None = None
) -> Iterator[tuple[int, list[Any]]]:
    """(line number, SQLite values in ``columns`` order) for every row; raises BadRow on a bad line."""
    wanted = list(columns if columns is not None else entry.columns)
    expected = set(entry.columns)
    decoder = msgspec.json.Decoder(dict[str, Any])
    for number, line in enumerate(reader.lines(entry.file), start=1):
        try:
            obj = decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise BadRow(entry.name, number, f"not a JSON object: {exc}") from None
        if obj.keys() != expected:
            missing = sorted(expected - obj.keys())
            extra = sorted(obj.keys() - expected)
            raise BadRow(entry.name, number, f"columns differ (missing {missing}, unexpected {extra})")
        try:
            yield number, [decode_value(obj[c]) for c in wanted]
        except BadValue as exc:
            raise BadRow(entry.name, number, str(exc)) from None


class BadRow(ReplicatorError):
    """A line of a table file that is not a row of that table."""

    exit_code = 3

    def __init__(self, table: str, line: int, reason: str) -> None:
        self.table, self.line, self.reason = table, line, reason
        super().__init__(f"{table} line {line}: {reason}", hint="the export is damaged; export again")
