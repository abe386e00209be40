"""Whether the postmaster named in postmaster.pid still runs: `up`'s database watch asks every 2 s."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from rag_server.infra.embedded_postgres import EmbeddedPostgres


def _server(pgdata: Path, pid: int) -> EmbeddedPostgres:
    (pgdata / "postmaster.pid").write_text(f"{pid}\n{pgdata}\n")
    return EmbeddedPostgres(pgdata=pgdata, uri="postgresql://x", pid=pid, started_here=False)


def test_a_live_process_is_running(tmp_path: Path) -> None:
    assert _server(tmp_path, os.getpid()).running()


def test_a_killed_postmaster_nobody_reaped_is_not_running(tmp_path: Path) -> None:
    """A container whose PID 1 reaps no orphans keeps a killed postmaster as a zombie: `kill(pid, 0)` still
    succeeds, so the watch never started PostgreSQL again (a CI run's 503s)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _state(child.pid) != "Z":
            time.sleep(0.05)
        assert _state(child.pid) == "Z", "the child did not become a zombie"
        assert not _server(tmp_path, child.pid).running()
    finally:
        child.wait()


def test_a_pid_file_of_a_gone_process_is_not_running(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not _server(tmp_path, child.pid).running()


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
