"""`python -m replicator ...` as an operator runs it: a subprocess, its exit code, stdout and stderr."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Run as root without the capabilities that bypass file permissions (so chmod means something).
UNPRIVILEGED = ("setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner")


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        """stderr without the structured (JSON) log lines: what an operator reads."""
        return [line for line in self.err.splitlines() if line.strip() and not _is_json(line)]

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}"


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without REPLICATOR_* settings (a developer's own must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}
    env.update(extra or {})
    return env


def run_cli(
    *args: str, cwd: Path, extra_env: dict[str, str] | None = None, unprivileged: bool = False, timeout: float = 120
) -> Ran:
    prefix: tuple[str, ...] = UNPRIVILEGED if unprivileged and os.geteuid() == 0 else ()
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "replicator", *args],
        cwd=cwd,
        env=cli_env(extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(source: Path, dsn: str, *args: str, env: dict[str, str] | None = None) -> Ran:
    extra = {"REPLICATOR_SOURCE": str(source), "REPLICATOR_TARGET": dsn, **(env or {})}
    return run_cli(*args, cwd=source.parent, extra_env=extra)


def status_json(source: Path, dsn: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    ran = cli(source, dsn, "status", "--json", env=env)
    return ran.code, json.loads(ran.out)


def caught_up(source: Path, dsn: str, env: dict[str, str] | None = None) -> bool:
    code, got = status_json(source, dsn, env)
    return code == 0 and got["phase"] == "STREAMING" and got["changes_behind"] == 0


def replicator(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI with JSON logs and no REPLICATOR_* from this environment, as the ORM end-to-end tests run it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args, "--log-format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
        cwd=cwd,
    )
