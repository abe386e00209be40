"""infra.file_lock: one holder at a time across processes; a killed holder releases it; the bench's async
`held` waits for it off the event loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from rag_server.evaluation.bench_search import held

HOLD = """
import sys, time
from pathlib import Path
from rag_server.infra.file_lock import file_lock
with file_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)  # a blocked event loop would make the async test below fail after this
"""
TAKE = """
import sys
from pathlib import Path
from rag_server.infra.file_lock import file_lock
with file_lock(Path(sys.argv[1])):
    print("taken", flush=True)
"""


def holder(lock: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_waits_until_the_holder_is_killed(tmp_path: Path) -> None:
    lock = tmp_path / "missing-folder" / "x.lock"  # the folder and the file are created
    first = holder(lock)
    second = subprocess.Popen([sys.executable, "-c", TAKE, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert second.poll() is None  # still waiting
        first.kill()  # a crash: the kernel releases the lock with the file
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 0 and out.strip() == "taken"
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()


async def test_the_bench_waits_for_its_lock_without_blocking_the_event_loop(tmp_path: Path) -> None:
    lock = tmp_path / "bench.lock"
    first = holder(lock)
    try:
        entered = asyncio.Event()

        async def bench() -> None:
            async with held(lock):
                entered.set()

        task = asyncio.create_task(bench())
        for _ in range(20):  # the loop keeps running other work while the bench waits
            await asyncio.sleep(0.05)
        assert not entered.is_set()
        first.kill()
        await asyncio.wait_for(task, 60)
        assert entered.is_set()
    finally:
        first.kill()
        first.wait()
