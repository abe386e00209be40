"""`rag-server up` as a user runs it, as a subprocess: its own RAG_DATA_DIR (embedded PostgreSQL, worker,
API) on a free port, stopped by SIGTERM and startable again on the same data directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from tests.support.processes import START_TIMEOUT_S, Proc, start_listening


class UpStack:
    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="ragup-", dir="/tmp"))
        # The stack's own embedded database: a DATABASE_URL from the test session must not leak in.
        self.env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("RAG_")}
        self.env.update({"RAG_DATA_DIR": str(self.data_dir), "HF_HUB_OFFLINE": "1", **(extra_env or {})})
        if "RAG_MODEL_CACHE_DIR" in os.environ:  # the exported ONNX model: reuse it, never re-export
            self.env["RAG_MODEL_CACHE_DIR"] = os.environ["RAG_MODEL_CACHE_DIR"]
        self.child: Proc | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        assert self.child is not None and self.child.base_url is not None
        return self.child.base_url

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return None if self.child is None else self.child.popen

    @property
    def log(self) -> Path:
        return self.data_dir / f"up-{self.starts}.log"

    def start(self, timeout: float = START_TIMEOUT_S) -> UpStack:
        """Start (again) on this data directory; a restart may get another port (`url` follows)."""
        self.starts += 1
        self.child = start_listening(["up"], self.env, self.log, timeout)
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
        shutil.rmtree(self.data_dir, ignore_errors=True)  # ~40 MB a stack
