"""An exclusive lock on a file (flock) across processes, like `flock FILE cmd`.

The kernel releases it when the holder's file is closed, a crash included, so no stale lock is left.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold `path` (created, with its folder, when missing) exclusively for the block; waits for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield
