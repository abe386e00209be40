"""Embedding backends. The Runtime holds one (see LazyEmbedder); each embeds in batches.

The local model runs on the CPU in a worker thread so the event loop keeps serving requests.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from functools import partial
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from rag_server.config import ConfigError, Settings
from rag_server.infra.batching import CoalescingEmbedder
from rag_server.infra.sentence_encoders import (
    Precision,
    SentenceEncoder,
    load_sentence_encoder,
    model_dim,
    resolve_model_dir,
)
from rag_server.infra.sentence_encoders import Runtime as EncoderRuntime

logger = logging.getLogger(__name__)

# What a process embeds: a worker documents, a server search queries (open_runtime's load_embedder).
EmbedderRole = Literal["documents", "queries"]

# Calls with at most this many texts are coalesced with concurrent ones; larger batches are not.
SMALL_CALL_TEXTS = 4


class EmbeddingError(Exception):
    """The embedding backend failed. `transient` says whether a retry may succeed."""

    def __init__(self, message: str, *, transient: bool, answer: str | None = None) -> None:
        super().__init__(f"{message}: {answer}" if answer else message)
        self.transient = transient
        # For log lines: without the service's answer, which may quote the texts sent (a document's,
        # a query's); the full message still reaches the client and the task's error.
        self.summary = message


class Embedder(Protocol):
    model_name: str
    dim: int

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-normalised float32 embeddings, one row per text (documents, chunks)."""
        ...

    async def embed_query(self, query: str) -> np.ndarray:
        """A search query's unit-normalised float32 embedding (one row)."""
        ...

    async def aclose(self) -> None:
        """Release what this event loop holds (HTTP connections); the embedder stays usable."""
        ...


class LocalEmbedder:
    """A local sentence-transformers model on the CPU (ONNX Runtime by default, see sentence_encoders).

    Documents are embedded at `precision`, search queries at `query_precision`. Each precision's encoder
    is loaded on first use (or by `load_documents` / `load_queries` at start-up): a worker never loads
    the queries' one, a server the documents' one only for /v1/embeddings.
    """

    def __init__(
        self,
        model_name: str,
        dim: int,
        batch_size: int,
        runtime: EncoderRuntime,
        cache_dir: Path,
        precision: Precision = "fp32",
        threads: int = 0,
        query_precision: Precision | None = None,
    ) -> None:
        self.model_name = model_name
        self.dim = dim
        self.batch_size = batch_size
        self._load = partial(load_sentence_encoder, model_name, runtime, cache_dir, threads=threads)
        self._precision = precision
        self._query_precision = query_precision or precision
        self._encoders: dict[Precision, SentenceEncoder] = {}
        self._loading = threading.Lock()
        # One encode at a time per process: one call already uses every core (see OnnxSentenceEncoder).
        self._lock = threading.Lock()
        self._small_calls = CoalescingEmbedder(self.embed_sync, max_batch=batch_size)
        self._queries = CoalescingEmbedder(self._embed_queries_sync, max_batch=batch_size)

    def _encoder(self, precision: Precision) -> SentenceEncoder:
        """This precision's encoder, loaded now if not yet (seconds; the first int8 load quantizes)."""
        with self._loading:
            encoder = self._encoders.get(precision)
            if encoder is None:
                encoder = self._load(precision)
                if encoder.dim != self.dim:
                    raise ValueError(
                        f"model {self.model_name} produces {encoder.dim}-d vectors but "
                        f"RAG_EMBEDDING_DIM={self.dim}"
                    )
                self._encoders[precision] = encoder
            return encoder

    def load_documents(self) -> SentenceEncoder:
        return self._encoder(self._precision)

    def load_queries(self) -> SentenceEncoder:
        try:
            return self._encoder(self._query_precision)
        except OSError as exc:
            if self._query_precision == self._precision:
                raise
            # The int8 graph is written next to the fp32 one on first use: a read-only model cache
            # (a container's baked one, say) must not take search down with it.
            logger.warning(
                "cannot prepare the %s query model (%s); queries are embedded at %s",
                self._query_precision,
                exc,
                self._precision,
            )
            self._query_precision = self._precision
            return self.load_documents()

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encoder = self.load_documents()
        with self._lock:
            return encoder.encode(texts, self.batch_size)

    def _embed_queries_sync(self, queries: list[str]) -> np.ndarray:
        encoder = self.load_queries()
        # int8 quantizes activations per model call: one query per call, so its vector never depends on
        # the queries embedded beside it (calls of one batch run side by side, a core each). fp32
        # vectors do not depend on the call: concurrent queries share one.
        rows = 1 if self._query_precision == "int8" else self.batch_size
        with self._lock:
            return encoder.encode(queries, rows)

    async def embed(self, texts: list[str]) -> np.ndarray:
        if len(texts) <= SMALL_CALL_TEXTS:
            # Small documents (and /v1/embeddings inputs) arriving together share one model call.
            return await self._small_calls.embed(texts)
        return await asyncio.to_thread(self.embed_sync, texts)

    async def embed_query(self, query: str) -> np.ndarray:
        # Concurrent searches' queries are embedded together (see infra/batching.py).
        return (await self._queries.embed([query]))[0]

    async def aclose(self) -> None:
        return None


class LazyEmbedder:
    """The embedder for these settings, built on first use (a local model is loaded only when needed).

    The Runtime holds one: `rag-server migrate` never loads a model, a server loads it at start-up
    (`load()` in a thread) so the first query does not pay for it.
    """

    def __init__(self, settings: Settings) -> None:
        self.model_name = settings.embedding_model
        self.dim = settings.embedding_dim
        self._settings = settings
        self._embedder: Embedder | None = None
        self._lock = threading.Lock()

    def load(self, role: EmbedderRole = "documents") -> Embedder:
        """Build the embedder now, and a local model's encoder for what this process embeds."""
        with self._lock:
            if self._embedder is None:
                self._embedder = build_embedder(self._settings)
            embedder = self._embedder
        if isinstance(embedder, LocalEmbedder):
            embedder.load_queries() if role == "queries" else embedder.load_documents()
        return embedder

    @property
    def loaded(self) -> Embedder | None:
        return self._embedder

    async def _loaded(self) -> Embedder:
        if self._embedder is None:
            return await asyncio.to_thread(self.load)
        return self._embedder

    async def embed(self, texts: list[str]) -> np.ndarray:
        return await (await self._loaded()).embed(texts)

    async def embed_query(self, query: str) -> np.ndarray:
        return await (await self._loaded()).embed_query(query)

    async def aclose(self) -> None:
        if self._embedder is not None:
            await self._embedder.aclose()


def check_local_model(settings: Settings) -> None:
    """Before a server or worker starts: a local RAG_EMBEDDING_MODEL that is not installed, or that makes
    vectors of another size than RAG_EMBEDDING_DIM, is a ConfigError (the CLI's one line), not a
    traceback out of the app's start-up or the worker's, after a new database was made for that size."""
    if settings.embedding_provider == "local":
        _check_dim(settings, resolve_model_dir(settings.embedding_model))


def check_new_database_dim(settings: Settings) -> None:
    """Before a new database is made (migration 0001 fixes RAG_EMBEDDING_DIM for good): a ConfigError
    when the local model, installed here, makes vectors of another size. Not installed (a host that only
    migrates): what loads it says so."""
    if settings.embedding_provider != "local":
        return
    try:
        root = resolve_model_dir(settings.embedding_model)
    except ConfigError:
        return
    _check_dim(settings, root)


def _check_dim(settings: Settings, model_root: Path) -> None:
    dim = model_dim(model_root)
    if dim is not None and dim != settings.embedding_dim:
        raise ConfigError(
            f"RAG_EMBEDDING_DIM={settings.embedding_dim}, but {settings.embedding_model} makes {dim}-d "
            f"vectors: set RAG_EMBEDDING_DIM={dim}"
        )


def build_embedder(settings: Settings) -> Embedder:
    """A new embedder for these settings (a local model is loaded now: seconds, CPU-bound)."""
    if settings.embedding_provider == "local":
        return LocalEmbedder(
            settings.embedding_model,
            settings.embedding_dim,
            settings.embedding_batch_size,
            settings.embedding_runtime,
            settings.model_cache_dir.expanduser(),
            settings.embedding_precision,
            settings.embedding_threads,
            settings.query_precision,
        )
    from rag_server.infra.http_embedders import OllamaEmbedder, OpenAIEmbedder

    if settings.embedding_provider == "ollama":
        return OllamaEmbedder(settings)
    if settings.embedding_provider == "openai":
        return OpenAIEmbedder(settings)
    raise ValueError(f"unknown embedding provider {settings.embedding_provider!r}")


def model_settings(settings: Settings, provider: str, model: str, dim: int, base_url: str | None) -> Settings:
    """`settings` with another embedding model (an embedding generation's, see rag_server.generations):
    batch size, timeouts, retries, runtime, cache and API key stay the configured ones."""
    return settings.model_copy(
        update={
            "embedding_provider": provider,
            "embedding_model": model,
            "embedding_dim": dim,
            "embedding_base_url": base_url,
        }
    )
