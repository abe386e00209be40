"""A child process that must not outlive the process that started it."""

from __future__ import annotations

import contextlib
import os
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int, sig: int) -> None:
    """Have the kernel send `sig` to this process when `parent` (the thread that started it) dies, even
    by SIGKILL, which runs no clean-up of its own (Linux; elsewhere nothing). Exits at once when the
    parent is already gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # it died before the line above
        os._exit(0)
