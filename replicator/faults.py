"""Failpoints: named no-op hooks at every commit boundary, so a test can crash the daemon in each window.

Exactly-once is a claim about crash windows (data committed but journal not pruned, checkpoint
written but process killed before the next batch...). Each window has a name, and the code calls
:func:`point` there. Unarmed, a point costs one dict lookup. A test arms points through the
environment of a subprocess::

    REPLICATOR_FAILPOINTS="apply.after_commit:crash,prune.after:raise"

Actions: ``crash`` (the default) ends the process at once with ``os._exit(CRASH_EXIT)``: no
``finally``, no rollback, no flush, exactly like SIGKILL or a power cut; ``raise`` raises
:class:`FailpointHit`, a transient error, so the worker's retry path runs.
"""

from __future__ import annotations

import os
import sys
from typing import Final, Literal

from replicator.errors import ReplicatorError

ENV: Final = "REPLICATOR_FAILPOINTS"
CRASH_EXIT: Final = 137
Action = Literal["crash", "raise"]

#: Every failpoint the code defines, in the order a batch passes them.
NAMES: Final = (
    "apply.after_read",
    "apply.after_write",
    "apply.before_commit",
    "apply.after_commit",
    "prune.after",
    "snapshot.copying",
    "snapshot.after_table",
    "snapshot.after_genesis",
    "import.after_table",
    "resnapshot.after_pending",
    "resnapshot.after_reinstall",
    "resnapshot.before_commit",
    "newtable.after_plan",
    "cutover.after_preflight",
    "cutover.after_freeze",
    "cutover.after_drain",
    "cutover.after_verify",
    "cutover.after_finish_pg",
    "cutover.before_fence_commit",
    "cutover.between_commits",
    "reverse.before_sqlite_commit",
    "reverse.between_commits",
    "reverse.before_postgres_commit",
    "rollback.after_fence",
    "rollback.before_close_commit",
    "rollback.between_commits",
)


class FailpointHit(ReplicatorError):
    """An armed ``raise`` failpoint fired (tests only)."""

    transient = True


def parse(text: str) -> dict[str, Action]:
    """``name[:action],...`` → name → action; unknown names or actions are refused, not ignored."""
    armed: dict[str, Action] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, action = item.partition(":")
        if name not in NAMES:
            raise ReplicatorError(f"unknown failpoint {name!r} in {ENV}", hint="known: " + ", ".join(NAMES))
        if action in ("", "crash"):
            armed[name] = "crash"
        elif action == "raise":
            armed[name] = "raise"
        else:
            raise ReplicatorError(f"unknown failpoint action {action!r} for {name}", hint="use crash or raise")
    return armed


_armed: dict[str, Action] = parse(os.environ.get(ENV, ""))
_left: dict[str, int] = {}
"""Points armed for a number of hits only (``arm(..., times=N)``)."""


def arm(name: str, action: Action = "crash", *, times: int | None = None) -> None:
    """Arm a point in this process (in-process tests), for ``times`` hits or until ``disarm_all``."""
    _armed.update(parse(f"{name}:{action}"))
    if times is not None:
        _left[name] = times


def armed() -> frozenset[str]:
    """The points armed now (one armed for N hits is gone after the Nth)."""
    return frozenset(_armed)


def disarm_all() -> None:
    _armed.clear()
    _left.clear()


def point(name: str) -> None:
    """The hook itself: nothing unless ``name`` is armed."""
    action = _armed.get(name)
    if action is None:
        return
    if name in _left:
        _left[name] -= 1
        if _left[name] <= 0:
            del _left[name], _armed[name]
    if action == "crash":
        sys.stderr.write(f"failpoint {name}: crash\n")
        sys.stderr.flush()
        os._exit(CRASH_EXIT)
    raise FailpointHit(f"failpoint {name} fired", hint="unset REPLICATOR_FAILPOINTS")
