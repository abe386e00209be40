"""Embedding services over HTTP: Ollama's API and OpenAI's (or any server speaking it). Batches, retries
of transient failures, the dimension check and normalising are shared (_HttpEmbedder)."""

from __future__ import annotations

import asyncio
import weakref

import httpx
import numpy as np

from rag_server.config import Settings
from rag_server.infra.embeddings import EmbeddingError


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
            if not np.isfinite(vectors).all():  # NaN (null in JSON: llama.cpp, serde_json) or infinite
                raise EmbeddingError(
                    f"the {self.provider} model {self.model_name} returned a vector holding a value that is "
                    "not a number (NaN, infinite or null)",
                    transient=False,
                )
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            if not norms.all():  # no direction: every cosine with it is NaN, it would match nothing or noise
                raise EmbeddingError(
                    f"the {self.provider} model {self.model_name} returned a vector of zeros",
                    transient=False,
                )
            return vectors / norms
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
