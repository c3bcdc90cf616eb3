"""Errors: the one base every error an operator reads derives from, and the checkpoint store's and audit's own.

:class:`OperatorError` is the one base of the errors ``replicator``, ``triggers`` and ``checkpoints`` raise: a
message, a hint, an exit code, a transient flag. The CLI prints any of them the same way (``error: <message> —
<hint>``, then exits with the error's code) and retry loops read ``transient`` instead of matching text. It lives
here because ``checkpoints`` is the lowest of the three: it imports neither of the others (an auditor runs
``python -m checkpoints`` with this package alone), ``triggers`` may import this one module of it, and
``replicator`` imports both. Callers match errors by type, never by their message text.

Exit codes (the README documents them): 0 ok, 1 operational failure, 2 usage or bad input, 3 verification
mismatch.
"""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_MISMATCH: Final = 3


class OperatorError(Exception):
    """Base of every error raised by ``replicator``, ``triggers`` and ``checkpoints``: what the CLI prints.

    ``message`` says what was wrong, ``hint`` what to do; ``exit_code`` is the process's exit status when the
    error ends a command; ``transient`` says whether retrying can succeed (a busy file, a lost connection),
    which retry loops read instead of matching text. Subclasses set ``exit_code`` and ``transient`` as class
    attributes; ``transient=`` overrides it for one instance.
    """

    exit_code: int = EXIT_FAILURE
    transient: bool = False

    def __init__(self, message: str, *, hint: str = "", transient: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if transient is not None:
            self.transient = transient

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class CheckpointError(OperatorError):
    """Base of every error raised by the ``checkpoints`` package (:class:`OperatorError` holds the
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
