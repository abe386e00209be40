"""Real `rag-server serve` / `rag-server worker` subprocesses for the benchmarks (blocking helpers)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass
class Child:
    popen: subprocess.Popen[bytes]
    log_path: Path
    base_url: str | None = None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, grace_s: float = 30) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def child_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = os.environ.copy()
    env.update({"DATABASE_URL": database_url, "RAG_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"})
    env.update(extra)
    return env


def start(args: list[str], env: dict[str, str], log_path: Path) -> Child:
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "rag_server", *args], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    return Child(popen, log_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(env: dict[str, str], log_path: Path, wait_s: float = 120) -> Child:
    port = free_port()
    child = start(["serve", "--host", "127.0.0.1", "--port", str(port)], env, log_path)
    child.base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if child.popen.poll() is not None:
            raise RuntimeError(f"server exited with {child.popen.returncode}:\n{child.log_tail()}")
        try:
            if httpx.get(f"{child.base_url}/health", timeout=2).status_code == 200:
                return child
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    child.stop()
    raise TimeoutError(f"server not healthy after {wait_s}s:\n{child.log_tail()}")


def start_worker(env: dict[str, str], log_path: Path) -> Child:
    return start(["worker"], env, log_path)
