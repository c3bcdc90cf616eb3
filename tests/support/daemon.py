"""`replicator run` for the tests: as its own process (one launcher) or in a thread of this process.

The process logs to files beside the source, never to a pipe: a pipe read only at the end fills up
and blocks the daemon on its next log line. Readiness is the daemon's own STREAMING row with its pid,
not a sleep."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replicator import config
from replicator.state import phase
from replicator.stream.metrics import Metrics
from replicator.stream.worker import Worker
from tests.support.state import read_phase

_launches = itertools.count(1)


def cfg(**apply_opts: Any) -> config.Config:
    """The daemon's configuration with a short poll, plus ``apply`` options."""
    return config.load(overrides={"apply": {"poll_interval_s": 0.05, **apply_opts}}, environ={})


def conf(**sections: dict[str, Any]) -> config.Config:
    """The daemon's configuration with a short poll, plus whole sections (``snapshot={...}``)."""
    overrides: dict[str, Any] = {"apply": {"poll_interval_s": 0.05}}
    overrides.update(sections)
    return config.load(overrides=overrides, environ={})


@dataclass(frozen=True)
class Exited:
    """How a daemon process ended: its exit code, its log (stderr) and its stdout."""

    code: int
    log: str
    out: str


class DaemonProcess:
    """`replicator run` as its own process: the app's connections are another process's, as in production.

    Its environment is this one's without REPLICATOR_* settings (a developer's own must not leak in),
    a 50 ms poll, the failpoints and batch size asked for, and ``env``. It runs in a process group of its
    own, so a signal (SIGKILL above all) takes any child with it."""

    def __init__(
        self,
        source: Path,
        dsn: str,
        *args: str,
        env: dict[str, str] | None = None,
        failpoints: str = "",
        batch_rows: int | None = None,
        json_log: bool = True,
        log: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.log = log or source.with_name(f"run-{os.getpid()}-{next(_launches)}.log")
        self.out = self.log.with_suffix(".out")
        extra = {"REPLICATOR_APPLY__POLL_INTERVAL_S": "0.05", "REPLICATOR_FAILPOINTS": failpoints}
        if batch_rows is not None:
            extra["REPLICATOR_APPLY__BATCH_ROWS"] = str(batch_rows)
        full = {**{k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}, **extra, **(env or {})}
        cmd = [sys.executable, "-m", "replicator", "run", "--source", str(source), "--target", dsn]
        if json_log:
            cmd += ["--log-format", "json"]
        with self.out.open("ab") as out, self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [*cmd, *args], env=full, stdout=out, stderr=err, cwd=cwd, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def poll(self) -> int | None:
        """Its exit code, None while it runs."""
        return self.proc.poll()

    def output(self, tail: int = 4000) -> str:
        """The end of its log (stderr), for assertion messages."""
        return self.log.read_text(errors="replace")[-tail:]

    def exited(self) -> Exited:
        code = self.proc.returncode
        assert code is not None, "the daemon is still running"
        return Exited(code, self.log.read_text(errors="replace"), self.out.read_text(errors="replace"))

    def wait(self, timeout: float = 60) -> Exited:
        """Wait for it to exit by itself (``--until-drained``, a crash failpoint, a refusal)."""
        self.proc.wait(timeout=timeout)
        return self.exited()

    def stop(self, timeout: float = 60) -> Exited:
        """SIGTERM to the daemon alone (finish the batch, exit), as a service manager stops it: a child it
        left running would then still be there for the test to see."""
        self._signal(signal.SIGTERM, group=False)
        return self.wait(timeout)

    def term(self, timeout: float = 60) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``: its exit code (-9 when killed)."""
        try:
            return self.stop(timeout).code
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        """SIGKILL to its process group (no ``finally``, no flush, no rollback): its exit code (-9 if it was
        still running)."""
        self._signal(signal.SIGKILL, group=True)
        return self.proc.wait(timeout=60)

    def _signal(self, signum: int, *, group: bool) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it exited between the poll and the signal
                if group:
                    os.killpg(self.proc.pid, signum)
                else:
                    os.kill(self.proc.pid, signum)

    def wait_streaming(self, dsn: str, timeout: float = 60) -> None:
        """Until the target's state row says STREAMING under this process's pid: it holds the source lock."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = read_phase(dsn)
            if st is not None and st.phase == phase.Phase.STREAMING and st.pid == self.proc.pid:
                return
            assert self.alive(), f"the daemon exited {self.proc.returncode}:\n{self.output(2000)}"
            time.sleep(0.1)
        raise AssertionError(f"the daemon did not start streaming:\n{self.output(2000)}")

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.kill()


def eventually(check: Callable[[], bool], daemon: DaemonProcess, timeout: float = 60.0) -> None:
    """Until ``check()`` holds, failing at once if the daemon exits meanwhile."""
    deadline = time.monotonic() + timeout
    while not check():
        assert daemon.proc.poll() is None, f"the daemon exited {daemon.proc.returncode}:\n{daemon.output()}"
        assert time.monotonic() < deadline, f"timed out; daemon log:\n{daemon.output()}"
        time.sleep(0.1)


class Daemon:
    """`replicator run` in a thread of this process (stopped like SIGTERM does): for tests that arm
    failpoints or read the worker's errors in-process."""

    def __init__(self, path: Path, dsn: str, c: config.Config | None = None, *, metrics: Metrics | None = None) -> None:
        self.worker = Worker(path, dsn, c or conf(), metrics=metrics)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:
            self.errors.append(exc)

    def __enter__(self) -> Daemon:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
