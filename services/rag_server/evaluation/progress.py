"""Progress bars for eval and bench: tqdm on stderr, the library `rag-server ingest` draws with.

On a terminal the bar redraws in place. Piped into a log, tqdm would put every redraw behind a
carriage return on one endless line; there each redraw becomes a plain line instead, at most one
every LOG_INTERVAL_S (and the final count), so a log stays readable and short.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

LOG_INTERVAL_S = 10.0


class _LogLines:
    """A file for tqdm that turns each '\\r'-prefixed redraw into one line of its own (None: drops it)."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._last = ""

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip()
        # close() redraws a bar that already reached 100%: one such line is enough.
        finished_again = "100%" in line and line.split("[")[0] == self._last.split("[")[0]
        if self._stream is not None and line and not finished_again:
            self._stream.write(line + "\n")
            self._last = line
        return len(text)

    def flush(self) -> None:
        if self._stream is not None:
            self._stream.flush()


def progress_bar(
    desc: str, total: int, quiet: bool = False, stream: TextIO | None = None, unit: str = "it"
) -> tqdm:
    """A tqdm bar for `total` steps (`bar.update(n)`), silent when `quiet`; `unit="B"`: bytes, scaled.

    Quiet bars still count (`bar.n`): tqdm's own disable=True would freeze it at 0, and callers
    compute their next step from it.
    """
    out = stream if stream is not None else sys.stderr
    scale = {"unit": unit, "unit_scale": unit == "B", "unit_divisor": 1024}
    if out.isatty() and not quiet:
        return tqdm(total=total, desc=desc, file=out, dynamic_ncols=True, **scale)
    return tqdm(
        total=total,
        desc=desc,
        file=_LogLines(None if quiet else out),
        mininterval=LOG_INTERVAL_S,
        ncols=100,
        ascii=True,
        **scale,
    )
