"""The one base of every error an operator reads: a message, a hint, an exit code, a transient flag.

Why a package of its own: ``replicator``, ``triggers`` and ``checkpoints`` each raise errors the CLI prints
the same way (``error: <message> — <hint>``, then exits with the error's code), and the daemon's retry loop
reads the same ``transient`` flag from all three. ``triggers`` and ``checkpoints`` never import
``replicator`` (an auditor runs ``python -m checkpoints`` without it), so the base cannot live there; this
package is below all three and imports nothing but the standard library. Callers match errors by type
(``except OperatorError``, or a subclass), never by their message text.

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


__all__ = ["EXIT_FAILURE", "EXIT_MISMATCH", "EXIT_OK", "EXIT_USAGE", "OperatorError"]
