"""A snapshot progress hook that stops the run the way Ctrl-C does, for the resume tests."""

from __future__ import annotations


class Interrupt:
    """Progress hook that raises KeyboardInterrupt (Ctrl-C) once ``at`` rows of the whole run were read."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.before = 0
        self.read = 0

    def start(self, table: str, total: int) -> None:
        self.before = self.read

    def advance(self, table: str, rows: int) -> None:
        self.read = self.before + rows
        if self.read >= self.at:
            raise KeyboardInterrupt

    def finish(self, table: str, rows: int, seconds: float) -> None:
        pass
