"""Errors raised on the SQLite side.

Every error carries a one-line message written for the operator, a ``hint`` saying what to do,
an ``exit_code`` for the CLI and a ``transient`` flag that the retry code reads (a busy database
is worth retrying; a corrupt file is not).
"""

from __future__ import annotations

from checkpoints.errors import EXIT_MISMATCH, EXIT_USAGE, OperatorError


class CaptureError(OperatorError):
    """Base of every error raised by the ``triggers`` package (:class:`checkpoints.errors.OperatorError` holds the
    message, hint, exit code and transient flag: one base for the three packages)."""


class SourceError(CaptureError):
    """The SQLite file cannot be used as given: missing, not SQLite, corrupt, unreadable."""

    exit_code = EXIT_USAGE


class SourceBusy(CaptureError):
    """The database is locked by another connection longer than our busy timeout."""

    transient = True


class SchemaUnsupported(CaptureError):
    """A table cannot be captured under the configured policy (no primary key, NULL keys...)."""

    exit_code = EXIT_USAGE


class CaptureNotInstalled(CaptureError):
    """An operation needs capture triggers that are not installed."""

    exit_code = EXIT_USAGE


class JournalTampered(CaptureError):
    """Journal rows we never pruned are gone (deleted by hand), or the journal's head went backwards.

    Never transient: the changes those rows recorded cannot be replayed, so applying on would skip
    them silently. Exit 3, like a chain that does not verify."""

    exit_code = EXIT_MISMATCH
