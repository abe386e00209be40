"""How long the worker's parsing child (parse_process.py) has spent on one file, and when that is too long.

Processor time (user + system, read from /proc) counts against RAG_PARSE_TIMEOUT_S: a busy machine read
the same file 2-5x slower by the clock, and a final verdict on a file must not depend on the machine's
load. A child that uses no processor never reaches that limit: it is stopped once it has slept a while
(STALL_WINDOW_S), at the latest by the clock (WALL_LIMIT_FACTOR x the limit). Where /proc cannot be read
(not Linux), the limit is time by the clock.
"""

from __future__ import annotations

import os

# The wall-clock backstop, in multiples of RAG_PARSE_TIMEOUT_S (processor time): a child reaches it first
# only when it got less than a fifth of a core on average. A busy machine here read files 2-5x slower
# by the clock than by processor time (reports/qa-2026-12-05.md), so a parser at work reaches its own
# limit first; one waiting without using the processor (blocked, stopped, deadlocked) still ends. Scaled
# with the limit, not a setting of its own: raising the limit for larger files raises it too.
WALL_LIMIT_FACTOR = 5
# A child that slept or stood stopped (state S or T), using less than STALL_MIN_SHARE of a core, for
# STALL_WINDOW_S of the clock is stuck: one at work on a busy machine is runnable (R) or waits for the disk
# (D, page faults) and gets a few percent anyway (8 busy processes on 2 cores: 25%). Without it a stuck
# file held a slot 5 x 600 s by default per attempt. A gap of FROZEN_GAP_S between two looks means the
# worker itself did not run (the stack paused, suspended, a VM stopped): the window starts again.
STALL_WINDOW_S = 60.0
STALL_MIN_SHARE = 0.01
FROZEN_GAP_S = 5.0  # ten of the worker's looks (parse_process.POLL_S)


class OverTime(Exception):
    """The child spent more than RAG_PARSE_TIMEOUT_S on the file (its message says how it was counted)."""


class Stalled(Exception):
    """The child slept past STALL_WINDOW_S, or waited past the wall-clock backstop, before it used up its
    processor time."""


def timeout_message(seconds: float) -> str:
    return (
        f"The file needed more than {seconds:g} s of processor time to read (RAG_PARSE_TIMEOUT_S) and was "
        "stopped; it may be malformed or pathologically complex: split it or save it again, or raise the "
        "limit."
    )


def wall_timeout_message(seconds: float) -> str:
    """Where the child's processor time cannot be read: the limit is time by the clock."""
    return (
        f"The file took longer than {seconds:g} s to read (RAG_PARSE_TIMEOUT_S) and was stopped; it may be "
        "malformed or pathologically complex: split it or save it again, or raise the limit."
    )


def idle_message(window_s: float, used_s: float) -> str:
    return (
        f"the file's parser process was stopped after sleeping more than {window_s:g} s, in which it used "
        f"only {used_s:.2f} s of processor time: it was stuck (blocked, stopped or deadlocked)"
    )


def stalled_message(waited_s: float, used_s: float) -> str:
    return (
        f"the file's parser process was stopped after waiting {waited_s:g} s for it ({WALL_LIMIT_FACTOR} x "
        f"RAG_PARSE_TIMEOUT_S), in which it used only {used_s:.1f} s of processor time: it was stuck "
        "(blocked, stopped or deadlocked) or starved by a busy machine"
    )


def process_stat(pid: int) -> tuple[str, float] | None:
    """A process's state (R running or runnable, S sleeping, D waiting for the disk, T stopped...) and the
    processor time (user + system, all its threads) it has used, or None where they cannot be read (no
    /proc: not Linux; the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command's name (2nd field) is in parentheses and may hold spaces and parentheses.
            fields = stat.read().rpartition(")")[2].split()
        # state, utime, stime: fields 3, 14, 15
        return fields[0], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class ParseClock:
    """The time the child has spent on one request, processor time and time by the clock; `check` says
    when that is too long."""

    def __init__(self, pid: int, now: float) -> None:
        self.pid = pid
        self.started = now
        # Read before the request is sent, while the child waits for it: its start-up and earlier files.
        # Unreadable where /proc exists (a passing error: out of file descriptors): all of its time counts,
        # a few seconds more, rather than a verdict by the clock.
        stat = process_stat(pid)
        self.cpu_before = None if stat is None else stat[1]
        if self.cpu_before is None and os.path.exists("/proc/self/stat"):
            self.cpu_before = 0.0
        # The last time it was seen at work (STALL_WINDOW_S), and its processor time then; the last look.
        self.active_at, self.active_used = now, 0.0
        self.looked_at = now

    def used(self) -> tuple[str, float] | None:
        """The child's state and the processor time it spent on the request, or None (gone, no /proc)."""
        stat = process_stat(self.pid)
        return None if stat is None or self.cpu_before is None else (stat[0], stat[1] - self.cpu_before)

    def check(self, now: float, limit: float) -> None:
        """OverTime past `limit` (RAG_PARSE_TIMEOUT_S) of processor time (of the clock, where there is
        none); Stalled once the child slept STALL_WINDOW_S, or past the wall-clock backstop."""
        waited = now - self.started
        if self.cpu_before is None:  # no processor time here: the clock is the limit
            if waited > limit:
                raise OverTime(wall_timeout_message(limit))
            return
        stat = self.used()  # None: the child is gone, and its reply says how
        frozen, self.looked_at = now - self.looked_at > FROZEN_GAP_S, now
        if stat is None:
            return
        state, used = stat
        if used > limit:
            raise OverTime(timeout_message(limit))
        asleep = state in ("S", "T", "t")
        if not asleep or frozen or used - self.active_used >= STALL_MIN_SHARE * STALL_WINDOW_S:
            self.active_at, self.active_used = now, used
        elif now - self.active_at > STALL_WINDOW_S:
            raise Stalled(idle_message(STALL_WINDOW_S, used - self.active_used))
        if waited > WALL_LIMIT_FACTOR * limit:
            raise Stalled(stalled_message(WALL_LIMIT_FACTOR * limit, used))
