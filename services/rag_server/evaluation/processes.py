"""Real `rag-server serve` / `rag-server worker` subprocesses (blocking helpers).

Used by the benchmarks, and by the tests (tests/support/processes.py re-exports them), so both drive the
services exactly as a user starts them.
"""

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
import psutil


@dataclass
class Child:
    popen: subprocess.Popen[bytes]
    log_path: Path
    base_url: str | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log()[-chars:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig`, wait up to `timeout`, then SIGKILL. Returns the exit code."""
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


# A child that exits fails the wait at once; the limit is for one that runs but does not answer. A full
# CI run (three test processes, each with its stacks and Chromium, on two cores) once took two minutes
# to start a server that starts in seconds alone.
START_TIMEOUT_S = 300

ADDRESS_IN_USE = "address already in use"  # uvicorn's log line when its port was taken


def start_listening(
    args: list[str], env: dict[str, str], log_path: Path, timeout: float = START_TIMEOUT_S, attempts: int = 3
) -> Child:
    """`rag-server <args> --port N` (`serve`, `up`) on a free port, once it answers /health on a socket of
    its own. A port `free_port` handed out can be taken by another process before the child binds it:
    the child then exits, and starts again on another port."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    for attempt in range(1, attempts + 1):
        port = free_port()
        child = start([*args, "--port", str(port)], env, log_path)
        child.base_url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(child, timeout)
            return child
        except RuntimeError:
            if attempt == attempts or ADDRESS_IN_USE not in child.log().lower():
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def start_server(env: dict[str, str], log_path: Path, timeout: float = START_TIMEOUT_S) -> Child:
    return start_listening(["serve", "--host", "127.0.0.1"], env, log_path, timeout)


def listens_on(pid: int, port: int) -> bool:
    """Whether process `pid`, or a process it started, listens on TCP `port`."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for process in family:
        try:
            sockets = process.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(s.status == psutil.CONN_LISTEN and s.laddr and s.laddr.port == port for s in sockets):
            return True
    return False


def wait_healthy(child: Child, timeout: float = START_TIMEOUT_S) -> None:
    """Wait until the child answers /health on its own socket: an answer alone may come from another
    server that took the port first (seen when parallel tests were handed the same free port)."""
    assert child.base_url
    port = int(child.base_url.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.popen.poll() is not None:
            raise RuntimeError(f"server exited with {child.popen.returncode}:\n{child.log_tail()}")
        try:
            answered = httpx.get(f"{child.base_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            answered = False
        if answered and listens_on(child.popen.pid, port):
            return
        time.sleep(0.2)
    child.kill()
    raise TimeoutError(f"server not healthy after {timeout}s:\n{child.log_tail()}")


def start_worker(env: dict[str, str], log_path: Path, *extra_args: str) -> Child:
    return start(["worker", *extra_args], env, log_path)
