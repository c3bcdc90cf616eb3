"""Errors raised by the checkpoint store and the audit."""

from __future__ import annotations


class CheckpointError(Exception):
    """Base of every error raised by the ``checkpoints`` package."""

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


class ChainBroken(CheckpointError):
    """The hash chain does not verify: a checkpoint was edited, removed, reordered or is missing."""

    exit_code = 3


class CheckpointNotFound(CheckpointError):
    """The checkpoint asked for does not exist (a usage error: the number is wrong)."""

    exit_code = 2


class WriterConflict(CheckpointError):
    """Another writer appended to the chain first; this writer's view of the head is stale."""


class CheckpointUsageError(CheckpointError):
    """The request cannot be done as given (e.g. compacting past the head)."""

    exit_code = 2
