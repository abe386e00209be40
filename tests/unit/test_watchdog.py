"""The hang watchdog (tests/support/watchdog.py), run for real: pytest in a subprocess on a probe module
whose tests wait for ever (an await; a blocked loop), beside one that passes, under pytest-xdist as
`just test` runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]
PROBE = """
import asyncio
import time

async def test_waits_for_ever():
    await asyncio.Event().wait()  # the line the dump must name

def test_blocks_for_ever():
    time.sleep(600)  # no event loop to cancel

def test_passes():
    pass
"""


def run_probe(tmp_path: Path, hang_s: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.support.watchdog"]\n')
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAG_TEST_HANG_S": hang_s}
    # pytest-asyncio's default loop scopes, not this project's: the dump finds the test's loop anyway.
    args = ["-n", "2", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-o", "asyncio_mode=auto"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_hung_test_fails_with_its_stacks_and_the_run_goes_on(tmp_path: Path) -> None:
    run = run_probe(tmp_path, "3")
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "=== HANG: test_probe.py::test_waits_for_ever ran past 3 s" in out, out
    # Its loop's tasks cancelled: it fails, its worker lives on (a crashed worker can stall
    # --dist loadfile). A test that blocks its thread cannot be cancelled: its worker ends.
    assert "crashed while running 'test_probe.py::test_waits_for_ever'" not in out, out
    assert "CancelledError" in out, out
    assert "crashed while running 'test_probe.py::test_blocks_for_ever'" in out, out
    assert "2 failed, 1 passed" in out, out
    saved = "".join(dump.read_text() for dump in (tmp_path / ".pytest-hangs").iterdir())
    assert "await asyncio.Event().wait()  # the line the dump must name" in saved  # the task's stack
    assert "test_waits_for_ever at " in saved  # the suspended coroutines
    assert "most recent call first" in saved  # every thread, faulthandler's dump


def test_a_bound_that_is_not_a_number_is_one_usage_line(tmp_path: Path) -> None:
    run = run_probe(tmp_path, "five minutes")
    assert run.returncode == 4, run.stdout + run.stderr
    assert "RAG_TEST_HANG_S is seconds (0: no bound), not 'five minutes'" in run.stderr
    assert "Traceback" not in run.stderr
