"""A test that hangs ends the run's worker with the stacks of what it waits for, instead of holding CI.

A test (its setup, call and teardown) running longer than RAG_TEST_HANG_S (default 300 s; the slowest
test takes about a minute on two loaded cores) is a hang, not slowness. The watchdog then writes every
asyncio task's stack and every thread's stack to the terminal (and to `.pytest-hangs/<worker>.txt`) and
exits the process: pytest-xdist reports "worker crashed while running <test>", replaces the worker and
goes on with the other modules. Without it a hung test held CI until its own deadline, saying nothing.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import io
import os
import sys
import threading
import time
from collections.abc import Generator
from pathlib import Path

import pytest

HANG_S = float(os.environ.get("RAG_TEST_HANG_S", "300"))
_running: tuple[str, float] | None = None  # (test id, time.monotonic() at its start)
_loop: asyncio.AbstractEventLoop | None = None


@pytest.fixture(scope="session", autouse=True)
async def _watched_loop() -> None:
    """Remembers the session's event loop, so that a dump can list its tasks."""
    global _loop
    _loop = asyncio.get_running_loop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    global _running
    _running = (item.nodeid, time.monotonic())
    try:
        return (yield)
    finally:
        _running = None


def pytest_configure(config: pytest.Config) -> None:
    if HANG_S > 0:
        threading.Thread(target=_watch, args=(config,), name="hang-watchdog", daemon=True).start()


def _watch(config: pytest.Config) -> None:
    while True:
        time.sleep(min(5.0, HANG_S))
        running = _running
        if running is not None and time.monotonic() - running[1] > HANG_S:
            _report(config, running[0])
            os._exit(70)


def _report(config: pytest.Config, nodeid: str) -> None:
    out = io.StringIO()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    out.write(f"\n=== HANG: {nodeid} ran past {HANG_S:.0f} s ({worker}); its stacks follow ===\n")
    out.write(_task_stacks())
    text = out.getvalue()
    hangs = Path(config.rootpath, ".pytest-hangs")
    hangs.mkdir(exist_ok=True)
    path = hangs / f"{worker}.txt"
    path.write_text(text)
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture()  # the terminal, not pytest's capture of this test
    sys.stderr.write(text)
    sys.stderr.write("--- threads ---\n")
    sys.stderr.flush()
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    with path.open("a") as file:
        faulthandler.dump_traceback(file=file, all_threads=True)


def _task_stacks() -> str:
    loop = _loop
    if loop is None or loop.is_closed():
        return "--- no event loop ---\n"

    async def dump() -> str:
        return task_stacks()

    try:
        return asyncio.run_coroutine_threadsafe(dump(), loop).result(timeout=10)
    except Exception as exc:  # the loop itself is blocked: the thread stacks show where
        return f"--- the event loop did not answer ({type(exc).__name__}): it is blocked ---\n"


def task_stacks() -> str:
    """Every task of the running loop but the caller's, with its stack (what each one waits for); then
    every suspended coroutine and async generator, as a task's stack stops at the first async generator
    it awaits (Starlette's middlewares, asyncpg's pool)."""
    out = io.StringIO()
    for task in asyncio.all_tasks() - {asyncio.current_task()}:
        out.write(f"--- {task!r}\n")
        task.print_stack(limit=40, file=out)
    out.write("--- suspended coroutines and async generators (innermost code first) ---\n")
    for obj in gc.get_objects():
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "ag_frame", None)
        if frame is not None and not (getattr(obj, "cr_running", False) or getattr(obj, "ag_running", False)):
            out.write(f"{frame.f_code.co_qualname} at {frame.f_code.co_filename}:{frame.f_lineno}\n")
    return out.getvalue()
