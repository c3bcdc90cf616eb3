"""The replicator's error hierarchy and the classification of PostgreSQL failures.

Each error (an :class:`checkpoints.errors.OperatorError`, the base shared with ``triggers`` and ``checkpoints``)
carries the message an operator reads, a ``hint`` saying what to do, an ``exit_code`` (documented in the
README: 0 ok, 1 operational failure, 2 usage or bad input, 3 verification mismatch) and a ``transient``
flag: retry loops retry exactly the errors that say they are transient, never by matching message text.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
import psycopg.errors

from checkpoints.errors import EXIT_FAILURE as EXIT_FAILURE
from checkpoints.errors import EXIT_MISMATCH as EXIT_MISMATCH
from checkpoints.errors import EXIT_OK as EXIT_OK
from checkpoints.errors import EXIT_USAGE as EXIT_USAGE
from checkpoints.errors import OperatorError as OperatorError


class ReplicatorError(OperatorError):
    """Base of every error raised by the ``replicator`` package (its message, hint, exit code and transient
    flag come from :class:`checkpoints.errors.OperatorError`, the one base ``triggers`` and ``checkpoints`` share)."""


class ConfigError(ReplicatorError):
    """A configuration file, variable or flag is wrong."""

    exit_code = EXIT_USAGE


class UsageError(ReplicatorError):
    """The command was asked for something it cannot do as given."""

    exit_code = EXIT_USAGE


class TargetError(ReplicatorError):
    """PostgreSQL refused or failed an operation."""


class TargetNotEmpty(TargetError):
    exit_code = EXIT_USAGE


class BadValue(ReplicatorError):
    """A source value cannot be represented exactly in its target column."""

    exit_code = EXIT_FAILURE


class UniqueCollision(BadValue):
    """Rows SQLite keeps distinct are equal in PostgreSQL on a UNIQUE index (a collation, an expression
    such as lower(), or a conversion such as two spellings of one instant): one of them would be lost."""


class VerificationFailed(ReplicatorError):
    """Both sides were compared and differ."""

    exit_code = EXIT_MISMATCH


#: A statement cut short by ``lock_timeout`` or ``statement_timeout`` (or a cancel): it says nothing about the
#: data, so code that turns a failed statement into a verdict (a foreign key that does not hold) re-raises these.
WAIT_CUT_SHORT: tuple[type[psycopg.Error], ...] = (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)

#: SQLSTATE classes (first two characters) after which retrying can succeed.
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "40"})
#: But not these: wrong password or missing database do not heal by waiting.
TERMINAL_SQLSTATES = frozenset({"28000", "28P01", "3D000", "42501", "57014"})


def is_transient_pg(exc: BaseException) -> bool:
    """Whether a psycopg error is worth retrying: connection loss, shutdown, serialization."""
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return sqlstate not in TERMINAL_SQLSTATES and sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES
    return isinstance(exc, psycopg.OperationalError) and not isinstance(exc, psycopg.errors.ProgrammingError)


#: The kinds of error a hint is for: one class, or a tuple of them (as ``isinstance`` takes them).
ErrorKinds = type[psycopg.Error] | tuple[type[psycopg.Error], ...]


def refused_by_target(
    message: str, exc: psycopg.Error, hints: Sequence[tuple[ErrorKinds, str]], otherwise: str
) -> TargetError:
    """PostgreSQL refused rows: ``message`` with the hint for the first kinds ``exc`` is one of (``otherwise`` for
    none), transient by its SQLSTATE. The load and the apply each say what to do per kind of violation; the rule
    that picks the hint and decides whether a retry can help is one."""
    hint = next((h for kinds, h in hints if isinstance(exc, kinds)), otherwise)
    return TargetError(message, hint=hint, transient=is_transient_pg(exc))
