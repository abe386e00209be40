"""Embedding backends. The Runtime holds one (see LazyEmbedder); each embeds in batches.

The local model runs on the CPU in a worker thread so the event loop keeps serving requests.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from functools import partial
from pathlib import Path
from typing import Literal, Protocol

import httpx
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


class _HttpEmbedder:
    """Shared HTTP plumbing: batching, retries of transient failures, dimension check, normalising.

    Timeouts, connection errors, 429 and 5xx are transient (retried here a few times with backoff,
    then raised as EmbeddingError(transient=True) so the worker retries the task later); any other
    4xx or a malformed answer is a configuration problem and not retried.
    """

    provider = "http"

    def __init__(self, settings: Settings, default_base_url: str) -> None:
        self.model_name = settings.embedding_model
        self.dim = settings.embedding_dim
        self.batch_size = settings.embedding_batch_size
        self.base_url = (settings.embedding_base_url or default_base_url).rstrip("/")
        self.api_key = settings.embedding_api_key
        self.timeout_s = settings.embedding_timeout_s
        self.retries = settings.embedding_retries
        self.retry_backoff_s = settings.embedding_retry_backoff_s
        # One keep-alive client per event loop: a search must not pay a new connection per query,
        # and a client cannot outlive or cross its loop (an embedder may be used from several loops).
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            client = self._clients[loop] = httpx.AsyncClient(timeout=self.timeout_s, headers=headers)
        return client

    async def aclose(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def _request(self, texts: list[str]) -> tuple[str, dict[str, object]]:
        raise NotImplementedError

    def _vectors(self, body: object, count: int) -> list[list[float]]:
        raise NotImplementedError

    async def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        client = self._client()
        parts = [
            await self._embed_batch(client, texts[i : i + self.batch_size])
            for i in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(parts)

    async def embed_query(self, query: str) -> np.ndarray:
        return (await self.embed([query]))[0]

    async def _embed_batch(self, client: httpx.AsyncClient, texts: list[str]) -> np.ndarray:
        url, payload = self._request(texts)
        last: EmbeddingError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
            try:
                response = await client.post(url, json=payload)
            except httpx.TimeoutException:
                last = EmbeddingError(
                    f"the {self.provider} embedding service at {self.base_url} did not answer within "
                    f"{self.timeout_s:g} s",
                    transient=True,
                )
                continue
            except httpx.TransportError as exc:
                last = EmbeddingError(
                    f"the {self.provider} embedding service at {self.base_url} is unreachable ({exc})",
                    transient=True,
                )
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = EmbeddingError(
                    f"the {self.provider} embedding service answered HTTP {response.status_code}",
                    answer=response.text[:200],
                    transient=True,
                )
                continue
            if response.status_code >= 400:
                raise EmbeddingError(
                    f"the {self.provider} embedding service rejected the request with HTTP "
                    f"{response.status_code}",
                    answer=response.text[:200],
                    transient=False,
                )
            try:
                vectors = np.asarray(self._vectors(response.json(), len(texts)), dtype=np.float32)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise EmbeddingError(
                    f"the {self.provider} embedding service sent an unexpected answer ({exc})",
                    transient=False,
                ) from exc
            if vectors.shape != (len(texts), self.dim):
                raise EmbeddingError(
                    f"the {self.provider} model {self.model_name} returned vectors of shape {vectors.shape}, "
                    f"expected ({len(texts)}, {self.dim}): check RAG_EMBEDDING_MODEL/RAG_EMBEDDING_DIM",
                    transient=False,
                )
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            return vectors / np.where(norms == 0, 1, norms)
        assert last is not None
        raise last


class OllamaEmbedder(_HttpEmbedder):
    """Ollama's POST /api/embed {model, input: [...]} -> {embeddings: [[...], ...]}."""

    provider = "Ollama"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "http://127.0.0.1:11434")

    def _request(self, texts: list[str]) -> tuple[str, dict[str, object]]:
        return f"{self.base_url}/api/embed", {"model": self.model_name, "input": texts}

    def _vectors(self, body: object, count: int) -> list[list[float]]:
        if not isinstance(body, dict):
            raise TypeError(f"a JSON object was expected, not {type(body).__name__}")
        embeddings: list[list[float]] = body["embeddings"]
        if len(embeddings) != count:
            raise ValueError(f"{len(embeddings)} embeddings for {count} inputs")
        return embeddings


class OpenAIEmbedder(_HttpEmbedder):
    """Any OpenAI-compatible POST {base}/v1/embeddings {model, input} -> {data: [{index, embedding}]}."""

    provider = "OpenAI-compatible"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "https://api.openai.com/v1")

    def _request(self, texts: list[str]) -> tuple[str, dict[str, object]]:
        # Accept both "https://host" and "https://host/v1" as the base URL.
        base = self.base_url if self.base_url.endswith("/v1") else f"{self.base_url}/v1"
        return f"{base}/embeddings", {"model": self.model_name, "input": texts, "encoding_format": "float"}

    def _vectors(self, body: object, count: int) -> list[list[float]]:
        if not isinstance(body, dict):
            raise TypeError(f"a JSON object was expected, not {type(body).__name__}")
        data = sorted(body["data"], key=lambda item: item["index"])
        if len(data) != count:
            raise ValueError(f"{len(data)} embeddings for {count} inputs")
        return [item["embedding"] for item in data]
