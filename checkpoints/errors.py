"""Errors raised by the checkpoint store and the audit."""

from __future__ import annotations

from errorbase import EXIT_MISMATCH, EXIT_USAGE, OperatorError


class CheckpointError(OperatorError):
    """Base of every error raised by the ``checkpoints`` package (:class:`errorbase.OperatorError` holds the
    message, hint, exit code and transient flag: one base for the three packages)."""


class ChainBroken(CheckpointError):
    """The hash chain does not verify: a checkpoint was edited, removed, reordered or is missing."""

    exit_code = EXIT_MISMATCH


class CheckpointNotFound(CheckpointError):
    """The checkpoint asked for does not exist (a usage error: the number is wrong)."""

    exit_code = EXIT_USAGE


class NoChainTable(CheckpointError):
    """The state schema holds no checkpoint table: nothing was snapshotted into this target yet (or --target
    and the state schema name another database). Callers that treat "no chain yet" as a state match this type."""


class WriterConflict(CheckpointError):
    """Another writer appended to the chain first; this writer's view of the head is stale."""


class CheckpointUsageError(CheckpointError):
    """The request cannot be done as given (e.g. compacting past the head)."""

    exit_code = EXIT_USAGE
