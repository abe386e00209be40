"""An in-process Embedder (the infra.embeddings protocol) for handing to `open_runtime(embedder=...)`.

Vectors are a deterministic function of the text (so search results are stable), and every call is
recorded, so a test can tell that the runtime used this embedder and not the settings' model.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass
class RecordingEmbedder:
    dim: int = 384
    model_name: str = "fake-recording-embedder"
    calls: list[list[str]] = field(default_factory=list)
    closed: int = 0
    # Raised by every call once set (a provider that went down).
    failure: BaseException | None = None
    # Every call waits for it once set (a provider that is slow to answer).
    gate: asyncio.Event | None = None
    # Search queries (embed_query), apart from the documents' calls.
    queries: list[str] = field(default_factory=list)
    # Set by the first call of either kind.
    asked: asyncio.Event = field(default_factory=asyncio.Event)

    async def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return await self._vectors(texts)

    async def embed_query(self, query: str) -> np.ndarray:
        self.queries.append(query)
        return (await self._vectors([query]))[0]

    async def _vectors(self, texts: list[str]) -> np.ndarray:
        self.asked.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            await asyncio.sleep(0)  # an answer from a provider: other tasks run before it comes
            raise self.failure
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            rows.append(np.random.default_rng(seed).standard_normal(self.dim))
        vectors = np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)

    async def aclose(self) -> None:
        self.closed += 1
