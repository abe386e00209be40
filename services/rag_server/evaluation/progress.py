"""A dependency-free progress bar on stderr (redraws at most ~10 times a second)."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.total = max(total, 0)
        self.done = 0
        self.stream = stream or sys.stderr
        self.width = width
        self._started = time.perf_counter()
        self._last_draw = 0.0

    def advance(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total) if self.total else self.done + n
        now = time.perf_counter()
        if now - self._last_draw >= 0.1 or self.done >= self.total:
            self._last_draw = now
            self._draw()

    def _draw(self) -> None:
        frac = self.done / self.total if self.total else 1.0
        filled = int(frac * self.width)
        elapsed = time.perf_counter() - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(
            f"\r{self.label:<22} [{bar}] {self.done}/{self.total} {frac:6.1%} {rate:8.1f}/s {elapsed:6.1f}s"
        )
        self.stream.flush()

    def close(self) -> None:
        self._draw()
        self.stream.write("\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        self._draw()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
