"""The processes under test and the fakes around them, each restartable by the fault injector."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse

from rag_server.evaluation.processes import Child, start, wait_healthy
from tests.fakes.embedding_server import FakeEmbeddingServer


@dataclass
class FlakyEmbedder(FakeEmbeddingServer):
    """The fake Ollama/OpenAI embedder, plus an outage switch: `failing` answers HTTP 500 to everything;
    `refuse()` stops listening (connection refused) until `recover()`."""

    failing: bool = False
    listening: bool = False

    async def _answer(self, request: Request, openai: bool) -> JSONResponse:
        if self.failing:
            return JSONResponse({"error": "chaos: internal error"}, status_code=500)
        return await super()._answer(request, openai)

    def start(self) -> FlakyEmbedder:
        super().start()
        self.listening = True
        return self

    def stop(self) -> None:
        if self.listening:
            super().stop()
            self.listening = False

    def refuse(self) -> None:
        self.stop()

    def recover(self) -> None:
        self.failing = False
        if not self.listening:
            self.start()  # the same port: clients reconnect to the same URL


@dataclass
class Stack:
    """`rag-server serve` on a fixed port and `rag-server worker` processes, with one environment."""

    env: dict[str, str]
    logs: Path
    port: int
    workers: list[Child] = field(default_factory=list)
    server: Child | None = None
    started: int = 0  # processes started, for unique log names

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _log(self, name: str) -> Path:
        self.started += 1
        return self.logs / f"{self.started:03d}-{name}.log"

    def start_server(self, timeout: float = 120) -> None:
        self.server = start(
            ["serve", "--host", "127.0.0.1", "--port", str(self.port)], self.env, self._log("server")
        )
        self.server.base_url = self.base_url
        wait_healthy(self.server, timeout)

    def kill_server(self) -> None:
        if self.server is not None:
            self.server.kill()

    def start_worker(self, index: int | None = None) -> None:
        worker = start(["worker"], self.env, self._log("worker"))
        if index is None:
            self.workers.append(worker)
        else:
            self.workers[index] = worker

    def wait_workers_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            while "worker ready" not in worker.log():
                if worker.popen.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker did not start:\n{worker.log_tail()}")
                time.sleep(0.2)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> dict[str, int]:
        """SIGTERM everything (graceful shutdown); exit codes by process name."""
        codes: dict[str, int] = {}
        for i, worker in enumerate(self.workers):
            codes[f"worker {i}"] = worker.stop(signal.SIGTERM, timeout=60)
        if self.server is not None:
            codes["server"] = self.server.stop(signal.SIGTERM, timeout=60)
        return codes
