"""Errors raised on the SQLite side.

Every error carries a one-line message written for the operator, a ``hint`` saying what to do,
an ``exit_code`` for the CLI and a ``transient`` flag that the retry code reads (a busy database
is worth retrying; a corrupt file is not).
"""

from __future__ import annotations


class CaptureError(Exception):
    """Base of every error raised by the ``triggers`` package."""

    exit_code: int = 1
    transient: bool = False

    def __init__(self, message: str, *, hint: str = "", transient: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if transient is not None:
            self.transient = transient

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class SourceError(CaptureError):
    """The SQLite file cannot be used as given: missing, not SQLite, corrupt, unreadable."""

    exit_code = 2


class SourceBusy(CaptureError):
    """The database is locked by another connection longer than our busy timeout."""

    transient = True


class SchemaUnsupported(CaptureError):
    """A table cannot be captured under the configured policy (no primary key, NULL keys...)."""

    exit_code = 2


class CaptureNotInstalled(CaptureError):
    """An operation needs capture triggers that are not installed."""

    exit_code = 2


class JournalTampered(CaptureError):
    """Journal rows we never pruned are gone (deleted by hand), or the journal's head went backwards.

    Never transient: the changes those rows recorded cannot be replayed, so applying on would skip
    them silently. Exit 3, like a chain that does not verify."""

    exit_code = 3
