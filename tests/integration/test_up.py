"""`rag-server up` as a user runs it: embedded database, worker and API, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import psutil

from tests.support.ingest import wait_for
from tests.support.processes import free_port, listens_on


def worker_children(up: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process(up.pid).children()
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and "worker" in p.cmdline()
    ]


def healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_up_serves_health_supervises_the_worker_and_stops_everything() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="ragu-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"RAG_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"})
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = (data_dir / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "rag_server", "up", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    try:
        wait_for(
            lambda: (healthy(base_url) and listens_on(up.pid, port)) or up.poll() is not None, 120, "/health"
        )
        assert up.poll() is None, (data_dir / "up.log").read_text()
        body = httpx.get(f"{base_url}/health").json()
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
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
