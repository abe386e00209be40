"""Real processes for tests: `rag-server serve` and `rag-server worker` as subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = os.environ.copy()
    env.update({"DATABASE_URL": database_url, "RAG_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"})
    env.update(extra)
    return env


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log_path: Path
    base_url: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return int(self.popen.returncode)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def start(args: list[str], env: dict[str, str], log_path: Path) -> Proc:
    log = log_path.open("wb")
    popen = subprocess.Popen(
        [sys.executable, "-m", "rag_server", *args], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    return Proc(popen, log_path)


def start_server(env: dict[str, str], log_path: Path, timeout: float = 60) -> Proc:
    port = free_port()
    proc = start(["serve", "--host", "127.0.0.1", "--port", str(port)], env, log_path)
    proc.base_url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, timeout)
    return proc


def wait_healthy(proc: Proc, timeout: float = 60) -> None:
    assert proc.base_url
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"server exited with {proc.popen.returncode}:\n{proc.log()}")
        try:
            if httpx.get(f"{proc.base_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError(f"server not healthy after {timeout}s:\n{proc.log()}")


def start_worker(env: dict[str, str], log_path: Path, *extra_args: str) -> Proc:
    return start(["worker", *extra_args], env, log_path)
