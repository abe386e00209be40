"""`rag-server up` as a user runs it: embedded database, worker and API, stopped by SIGTERM."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.ingest import wait_for
from tests.support.processes import Proc, start_listening


def worker_children(up: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process(up.pid).children()
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and "worker" in p.cmdline()
    ]


def fresh_data_dir() -> tuple[Path, dict[str, str]]:
    data_dir = Path(tempfile.mkdtemp(prefix="ragu-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"RAG_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"})
    return data_dir, env


@contextmanager
def running_up() -> Iterator[tuple[Proc, Path]]:
    """`up` on a data directory of its own; at the end nothing of it is left: the process, a PostgreSQL
    left running (fast shutdown), the directory."""
    data_dir, env = fresh_data_dir()
    child = start_listening(["up"], env, data_dir / "up.log")
    try:
        yield child, data_dir
    finally:
        if child.popen.poll() is None:
            child.popen.kill()
            child.popen.wait()
        postmaster = data_dir / "pg" / "postmaster.pid"
        if postmaster.exists():
            pid = int(postmaster.read_text().split()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            wait_for(lambda: not psutil.pid_exists(pid), 60, "PostgreSQL to stop")
        shutil.rmtree(data_dir, ignore_errors=True)


def test_up_serves_health_supervises_the_worker_and_stops_everything() -> None:
    with running_up() as (child, data_dir):
        up = child.popen
        body = httpx.get(f"{child.base_url}/health").json()
        assert body["extensions"]["vector"]["active"] and body["extensions"]["pgmq"]["active"]
        assert body["bm25_engine"] == "native"
        assert (data_dir / "pg" / "postmaster.pid").exists()

        wait_for(lambda: len(worker_children(up)) == 1, 60, "the worker process")
        first = worker_children(up)[0]
        first.kill()  # a crashed worker is replaced
        wait_for(
            lambda: [p.pid for p in worker_children(up)] not in ([], [first.pid]), 60, "a restarted worker"
        )
        second = worker_children(up)[0]

        up.send_signal(signal.SIGTERM)
        up.wait(60)
        assert not second.is_running() or second.status() == psutil.STATUS_ZOMBIE
        assert not (data_dir / "pg" / "postmaster.pid").exists(), "embedded PostgreSQL still running"
        assert "embedded PostgreSQL stopped" in (data_dir / "up.log").read_text()


def test_up_starts_its_database_again_when_it_dies() -> None:
    """PostgreSQL killed under `up` (the OOM killer): the stack answered 503 for ever, with no line why."""
    with running_up() as (child, data_dir):
        postmaster = data_dir / "pg" / "postmaster.pid"
        first = int(postmaster.read_text().split()[0])
        os.kill(first, signal.SIGKILL)

        def ready_again() -> bool:
            try:
                return httpx.get(f"{child.base_url}/health/ready", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        log = data_dir / "up.log"
        # A backend that has not yet noticed its postmaster's death can still answer the first check.
        wait_for(lambda: "is gone (killed?): starting it again" in log.read_text(), 30, "the watch's line")
        wait_for(ready_again, 90, "the stack ready again")
        again = int(postmaster.read_text().split()[0])
        assert again != first
        # Killed while it started (the OOM killer while it allocates shared memory): its postmaster.pid
        # lacks the socket directory, listen address and status lines. Every start asserted on it, for ever.
        lines = postmaster.read_text().splitlines()
        postmaster.write_text("\n".join([*lines[:4], "", "", lines[6]]) + "\n")
        os.kill(again, signal.SIGKILL)
        wait_for(lambda: _postmaster_pid(postmaster) not in (None, again), 60, "a new postmaster")
        wait_for(ready_again, 90, "the stack ready again after a start cut short")
        # Ready again is the test: the short file made every start an assertion, for ever. A single start
        # may still fail (the killed server's backends still exiting, a pid file read while a new
        # postmaster writes it); the next round starts it.
        again = int(postmaster.read_text().split()[0])
        # One that cannot start (a full disk, a bad setting) says why in one line, not pg_ctl's traceback.
        settings = data_dir / "pg" / "postgresql.auto.conf"
        kept = settings.read_text()
        settings.write_text(kept + "shared_buffers = 'plenty'\n")
        mark = len(log.read_text())
        os.kill(again, signal.SIGKILL)
        said = 'did not start again: FATAL: configuration file "'
        wait_for(lambda: said in log.read_text()[mark:], 60, "the reason it did not start")
        assert "CalledProcessError" not in log.read_text()[mark:]
        # Nor the library's copy of the whole server log, at every round (found filling a disk).
        assert "Showing contents of postgres server log" not in log.read_text()[mark:]
        # Tried again ever less often: 4 s, 8 s... (every 2 s, each try a line, for as long as it lasted).
        try:
            wait_for(lambda: "trying again in 8 s" in log.read_text()[mark:], 90, "a longer wait")
        except TimeoutError as exc:  # CI keeps no log: what the watch wrote since the bad setting
            since = log.read_text()[mark:][-4000:]
            raise AssertionError(f"{exc}; up.log since the bad setting:\n{since}") from exc
        settings.write_text(kept)
        wait_for(ready_again, 90, "the stack ready again once it can start")
        again = int(postmaster.read_text().split()[0])
        child.popen.send_signal(signal.SIGTERM)
        child.popen.wait(60)
        assert not psutil.pid_exists(again) or psutil.Process(again).status() == psutil.STATUS_ZOMBIE


def _postmaster_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def test_a_worker_stops_when_up_is_killed() -> None:
    """`up` killed by SIGKILL (the OOM killer, kill -9) runs no stop: its worker ran on for good."""
    with running_up() as (child, _):
        up = child.popen
        wait_for(lambda: len(worker_children(up)) == 1, 60, "the worker process")
        worker = worker_children(up)[0]
        up.kill()
        up.wait()
        wait_for(
            lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE,
            30,
            "the worker to stop",
        )


@pytest.mark.parametrize("command", ["up", "serve"])
def test_a_port_in_use_is_one_line_and_nothing_starts(command: str) -> None:
    data_dir, env = fresh_data_dir()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "rag_server", command, "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.splitlines() == [  # the CLI's form of a refusal: one `error:` line, nothing else
        f"error: cannot listen on 127.0.0.1:{port}: address already in use (another rag-server?): "
        "stop it, or choose another port with --port"
    ]
    assert done.stdout == ""
    assert not (data_dir / "pg").exists()  # `up` started no database (it was the first thing it did)
    shutil.rmtree(data_dir)
