"""`rag-server up` as a user runs it, as a subprocess: its own RAG_DATA_DIR (embedded PostgreSQL, worker,
API) on a free port, stopped by SIGTERM and startable again on the same data directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

import httpx

from tests.support.ingest import wait_for
from tests.support.processes import ADDRESS_IN_USE, free_port, listens_on


def healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class UpStack:
    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="ragup-", dir="/tmp"))
        # The stack's own embedded database: a DATABASE_URL from the test session must not leak in.
        self.env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("RAG_")}
        self.env.update({"RAG_DATA_DIR": str(self.data_dir), "HF_HUB_OFFLINE": "1", **(extra_env or {})})
        if "RAG_MODEL_CACHE_DIR" in os.environ:  # the exported ONNX model: reuse it, never re-export
            self.env["RAG_MODEL_CACHE_DIR"] = os.environ["RAG_MODEL_CACHE_DIR"]
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / f"up-{self.starts}.log"

    def start(self, timeout: float = 180, attempts: int = 3) -> UpStack:
        self.starts += 1
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rag_server", "up", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=log,
            )
        proc = self.proc
        # /health answering is not enough: another test's server may hold a port free_port handed out.
        wait_for(
            lambda: (healthy(self.url) and listens_on(proc.pid, self.port)) or proc.poll() is not None,
            timeout,
            "rag-server up /health",
        )
        if proc.poll() is not None and attempts > 1 and ADDRESS_IN_USE in self.log.read_text().lower():
            self.port = free_port()
            return self.start(timeout, attempts - 1)
        assert proc.poll() is None, self.log.read_text()
        return self

    def stop(self) -> int:
        """SIGTERM, as Ctrl-C or a service manager stops it; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(90)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> UpStack:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()  # SIGTERM first: `up` stops the embedded PostgreSQL it started
