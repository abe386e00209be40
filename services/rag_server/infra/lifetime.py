"""How a process ends: a child that must not outlive its parent, and SIGTERM/SIGINT as a request to stop.

A long-running command (`worker`, `serve`, `up`) must stop in order whenever a supervisor (systemd,
`docker stop`, `up` stopping its worker) or Ctrl-C asks, its first seconds included: migrations, the
model's load, the embedded database's start. With the default dispositions SIGTERM killed it there
(exit -15, no line, no clean-up: a supervisor counts a crash) and SIGINT raised KeyboardInterrupt
wherever the main thread was. `StopSignals` is caught from the CLI's first line on and only records the
signal: a synchronous start-up looks at it between its steps (`check`), an asyncio one gets an event
(`in_loop`), and a server's loop a callback (`calling`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # imported where used: the CLI catches the signals before asyncio's ~0.1 s import
    import asyncio

PR_SET_PDEATHSIG = 1  # linux/prctl.h

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

T = TypeVar("T")


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


class StoppedBeforeReady(Exception):
    """A stop signal came while the process was still starting: what it opened is closed on the way out,
    and the CLI says so and exits 0 (a stop asked for, not a failure)."""


class StopSignals:
    """SIGTERM and SIGINT recorded as a request to stop instead of killing or interrupting the process."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._on_stop: Callable[[], None] | None = None

    def install(self) -> StopSignals:
        # Python lets only the main thread set handlers (a test may run the CLI in another one).
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._received)
        return self

    def restore(self) -> None:
        """The handlers from before `install` back (a short command: the usual Ctrl-C and SIGTERM), and a
        signal that came meanwhile delivered to them now, as it would have been."""
        previous, self._previous = self._previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if previous and self.received is not None:
            signal.raise_signal(self.received)

    def check(self) -> None:
        """Between the steps of a start-up: StoppedBeforeReady when a stop was asked for."""
        if self.received is not None:
            raise StoppedBeforeReady

    @contextlib.contextmanager
    def calling(self, on_stop: Callable[[], None]) -> Iterator[None]:
        """Within it a stop signal also calls `on_stop` (at once when one came already), from the main
        thread's signal handler."""
        self._on_stop = on_stop
        try:
            if self.received is not None:
                on_stop()
            yield
        finally:
            self._on_stop = None

    @contextlib.contextmanager
    def in_loop(self) -> Iterator[asyncio.Event]:
        """An event of the running loop, set by a stop signal (already set when one came before).

        Through the loop's own handlers: a plain handler runs only once the main thread runs Python again,
        and a signal the kernel hands to another thread (one loading the model) would not wake the loop."""
        import asyncio

        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._received, sig, None)
        try:
            with self.calling(stopping.set):
                yield stopping
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)  # it leaves the default disposition behind
                if sig in self._previous:
                    signal.signal(sig, self._received)

    def _received(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self._on_stop is not None:
            self._on_stop()


async def unless_stopped(stopping: asyncio.Event, step: Awaitable[T]) -> T:
    """`step`'s result, unless `stopping` is set first: then `step` is cancelled (a thread it waits for
    runs to its end on its own) and StoppedBeforeReady raised."""
    import asyncio

    running = asyncio.ensure_future(step)
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not running.done():
            running.cancel()
            await asyncio.wait({running})  # its clean-up done; what it raised on the way is not the news
    if stopping.is_set():
        if not running.cancelled():
            running.exception()  # retrieved: a stop asked for wins over how the step ended
        raise StoppedBeforeReady
    return running.result()
