"""A test that hangs ends the run's worker with the stacks of what it waits for, instead of holding CI.

A test (its setup, call and teardown) running longer than RAG_TEST_HANG_S (default 300 s; the slowest
test takes about a minute on two loaded cores) is a hang, not slowness. The watchdog then writes every
asyncio task's stack, every suspended coroutine and every thread's stack to the terminal (and to
`.pytest-hangs/<worker>.txt`), and cancels every task of the running event loops: the test fails with
CancelledError and the run goes on. Only a test still running CANCEL_GRACE_S later (a blocked loop, a
cancel swallowed again) ends its process. That is the last resort: pytest-xdist then replaces the worker,
but under --dist loadfile it may never hand out the work left (pytest-xdist issue 1378), and the run
waited for its deadline, as a hung test without the watchdog did, saying nothing.
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
import types
from collections.abc import Generator
from pathlib import Path

import pytest

_running: tuple[str, float] | None = None  # (test id, time.monotonic() at its start)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    global _running
    _running = (item.nodeid, time.monotonic())
    try:
        return (yield)
    finally:
        _running = None


def pytest_configure(config: pytest.Config) -> None:
    raw = os.environ.get("RAG_TEST_HANG_S", "300")
    try:
        hang_s = float(raw)
    except ValueError:
        raise pytest.UsageError(f"RAG_TEST_HANG_S is seconds (0: no bound), not {raw!r}") from None
    if hang_s > 0:
        threading.Thread(target=_watch, args=(config, hang_s), name="hang-watchdog", daemon=True).start()


CANCEL_GRACE_S = 30.0


def _watch(config: pytest.Config, hang_s: float) -> None:
    while True:
        time.sleep(min(5.0, hang_s))
        running = _running
        if running is not None and time.monotonic() - running[1] > hang_s:
            _report(config, running[0], hang_s)
            if _cancel_running_loops() and _ends(running, CANCEL_GRACE_S):
                continue  # the test failed with CancelledError; the next one runs
            sys.stderr.write(
                f"=== the test did not end within {CANCEL_GRACE_S:.0f} s of a cancel: exiting ===\n"
            )
            os._exit(70)


def _cancel_running_loops() -> bool:
    """Cancel every task of each running event loop (the test's, its fixtures'); whether there was one."""
    loops = _running_loops()
    for loop in loops:
        loop.call_soon_threadsafe(lambda loop=loop: [t.cancel() for t in asyncio.all_tasks(loop)])
    return bool(loops)


def _ends(running: tuple[str, float], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if _running is not running:
            return True
        time.sleep(0.2)
    return False


def _running_loops() -> list[asyncio.AbstractEventLoop]:
    return [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]


def _report(config: pytest.Config, nodeid: str, hang_s: float) -> None:
    out = io.StringIO()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    out.write(f"\n=== HANG: {nodeid} ran past {hang_s:.0f} s ({worker}); its stacks follow ===\n")
    out.write(_task_stacks())
    text = out.getvalue()
    hangs = Path(config.rootpath, ".pytest-hangs")
    hangs.mkdir(exist_ok=True)
    path = hangs / f"{worker}.txt"
    with path.open("a") as file:  # a worker that goes on may meet another hang
        file.write(text)
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
    """task_stacks() run in each running event loop: the test's, whichever loop scope pytest-asyncio
    gave it (found among all objects, as the running loop is the main thread's own to ask)."""
    loops = _running_loops()
    if not loops:
        return "--- no event loop is running ---\n"

    async def dump() -> str:
        return task_stacks()

    out = []
    for loop in loops:
        try:
            out.append(asyncio.run_coroutine_threadsafe(dump(), loop).result(timeout=10))
        except TimeoutError:  # the loop itself is blocked: the thread stacks show where
            out.append("--- the event loop did not answer within 10 s: it is blocked ---\n")
        except Exception as exc:
            out.append(f"--- the tasks could not be listed: {exc!r} ---\n")
    return "".join(out)


def task_stacks() -> str:
    """Every task of the running loop but the caller's, with its stack (what each one waits for); then
    every suspended coroutine and async generator, as a task's stack stops at the first async generator
    it awaits (Starlette's middlewares, asyncpg's pool)."""
    out = io.StringIO()
    for task in asyncio.all_tasks() - {asyncio.current_task()}:
        out.write(f"--- {task!r}\n")
        task.print_stack(limit=40, file=out)
    out.write("--- every suspended coroutine and async generator, at its line ---\n")
    for obj in gc.get_objects():
        if not isinstance(obj, types.CoroutineType | types.AsyncGeneratorType):
            continue  # (and never a proxy's __getattr__, which may do anything)
        frame = obj.cr_frame if isinstance(obj, types.CoroutineType) else obj.ag_frame
        running = obj.cr_running if isinstance(obj, types.CoroutineType) else obj.ag_running
        if frame is not None and not running:
            out.write(f"{frame.f_code.co_qualname} at {frame.f_code.co_filename}:{frame.f_lineno}\n")
    return out.getvalue()
