"""A real local HTTP server speaking Ollama's /api/embed and OpenAI's /v1/embeddings.

Only the remote embedding APIs are faked, at the protocol level. Behaviour is steered by markers
inside the input texts, so tests sharing one server never interfere:
  FAIL503x<n>-<tag>   the first n requests containing this marker get HTTP 503
  ALWAYS503           every request containing it gets HTTP 503
  REJECT400           HTTP 400 (a non-transient error)
  ECHO400             HTTP 400 whose body quotes the input, as some services do (keep it out of logs)
  NOTANOBJECT         HTTP 200 with a JSON array instead of the protocol's object
  NANVECTOR           HTTP 200 whose vectors hold a null: what llama.cpp and serde_json servers (TEI) write
                      for a NaN a model overflowed to
  ZEROVECTOR          HTTP 200 whose first vector is all zeros (a model that failed silently)
  SLOW<ms>            the request sleeps this many milliseconds before answering
  HOLD-<tag>          the request waits until the test calls `release("<tag>")` (`held` counts them)
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rag_server.config import Settings
from tests.support.processes import free_port


def fake_vector(text: str, dim: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32).tolist()


@dataclass
class FakeEmbeddingServer:
    dim: int = 768
    port: int = field(default_factory=free_port)
    requests: list[dict[str, Any]] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)
    delay_s: float = 0.0  # applied to every request (timeouts)
    wrong_dim: bool = False
    held: Counter[str] = field(default_factory=Counter)  # requests seen per HOLD-<tag>
    _gates: defaultdict[str, threading.Event] = field(default_factory=lambda: defaultdict(threading.Event))

    def release(self, tag: str) -> None:
        """Answer the requests waiting on HOLD-<tag>, and every later one at once."""
        self._gates[tag].set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _answer(self, request: Request, openai: bool) -> JSONResponse:
        body = await request.json()
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        self.requests.append(
            {
                "path": request.url.path,
                "body": body,
                "auth": request.headers.get("authorization"),
                # The client's port tells requests on one kept-alive connection from new connections.
                "peer": request.client.port if request.client else None,
            }
        )
        joined = "\n".join(texts)
        delay = self.delay_s + sum(int(ms) for ms in set(re.findall(r"SLOW(\d+)", joined))) / 1000
        if delay:
            await asyncio.sleep(delay)
        for tag in set(re.findall(r"HOLD-(\w+)", joined)):
            self.held[tag] += 1
            await asyncio.to_thread(self._gates[tag].wait, 120)  # bounded: never blocks the fake's stop
        for marker, n in set(re.findall(r"(FAIL503x(\d+)-\w+)", joined)):
            self.seen[marker] += 1
            if self.seen[marker] <= int(n):
                return JSONResponse({"error": "overloaded"}, status_code=503)
        if "ALWAYS503" in joined:
            return JSONResponse({"error": "service unavailable"}, status_code=503)
        if "REJECT400" in joined:
            return JSONResponse({"error": "input rejected"}, status_code=400)
        if "ECHO400" in joined:
            return JSONResponse({"error": f"cannot embed {joined[:150]!r}"}, status_code=400)
        if "NOTANOBJECT" in joined:
            return JSONResponse([])
        dim = self.dim + 1 if self.wrong_dim else self.dim
        vectors: list[list[float | None]] = [list(fake_vector(t, dim)) for t in texts]
        if "NANVECTOR" in joined:
            vectors[0][0] = None
        if "ZEROVECTOR" in joined:
            vectors[0] = [0.0] * dim
        if openai:
            data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
            data.reverse()  # the protocol orders by `index`, not by position
            return JSONResponse(
                {
                    "object": "list",
                    "data": data,
                    "model": body["model"],
                    "usage": {"prompt_tokens": 0, "total_tokens": 0},
                }
            )
        return JSONResponse({"model": body["model"], "embeddings": vectors})

    async def ollama(self, request: Request) -> JSONResponse:
        return await self._answer(request, openai=False)

    async def openai(self, request: Request) -> JSONResponse:
        return await self._answer(request, openai=True)

    def start(self) -> FakeEmbeddingServer:
        app = Starlette(
            routes=[
                Route("/api/embed", self.ollama, methods=["POST"]),
                Route("/v1/embeddings", self.openai, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("fake embedding server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)


def fake_ollama_env(server: FakeEmbeddingServer) -> dict[str, str]:
    """Environment for server/worker subprocesses that embed through the fake Ollama."""
    return {
        "RAG_EMBEDDING_PROVIDER": "ollama",
        "RAG_EMBEDDING_MODEL": "nomic-embed-text",
        "RAG_EMBEDDING_DIM": str(server.dim),
        "RAG_EMBEDDING_BASE_URL": server.base_url,
    }


def fake_embedding_settings(
    database_url: str, data_dir: Path, fake: FakeEmbeddingServer, **overrides: Any
) -> Settings:
    """Settings that embed through the fake Ollama server (what `fake_ollama_env` gives subprocesses)."""
    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        embedding_provider="ollama",
        embedding_model="nomic-embed-text",
        embedding_dim=fake.dim,
        embedding_base_url=fake.base_url,
        **overrides,
    )
