"""Ollama and OpenAI-compatible embedders against a local server speaking their protocols."""

from __future__ import annotations

import numpy as np
import pytest

from rag_server.config import Settings
from rag_server.infra.embeddings import EmbeddingError
from rag_server.infra.http_embedders import OllamaEmbedder, OpenAIEmbedder
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_vector


def embedding_settings(fake: FakeEmbeddingServer, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "embedding_provider": "ollama",
        "embedding_model": "nomic-embed-text",
        "embedding_dim": 768,
        "embedding_base_url": fake.base_url,
        "embedding_batch_size": 3,
        "embedding_retries": 2,
        "embedding_retry_backoff_s": 0.01,
        "embedding_timeout_s": 2.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def expected(texts: list[str]) -> np.ndarray:
    raw = np.asarray([fake_vector(t, 768) for t in texts], dtype=np.float32)
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)


async def test_ollama_batches_and_normalises(fake: FakeEmbeddingServer) -> None:
    fake.requests.clear()
    texts = [f"text number {i}" for i in range(7)]
    vectors = await OllamaEmbedder(embedding_settings(fake)).embed(texts)
    assert vectors.shape == (7, 768) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected(texts), rtol=1e-5)
    assert [len(r["body"]["input"]) for r in fake.requests] == [3, 3, 1]
    assert {r["path"] for r in fake.requests} == {"/api/embed"}
    assert fake.requests[0]["body"]["model"] == "nomic-embed-text"


async def test_calls_reuse_one_connection_until_released(fake: FakeEmbeddingServer) -> None:
    fake.requests.clear()
    embedder = OllamaEmbedder(embedding_settings(fake))
    for query in ("first query", "second query", "third query"):
        await embedder.embed([query])
    peers = [r["peer"] for r in fake.requests]
    assert len(peers) == 3 and len(set(peers)) == 1, peers  # one kept-alive connection

    await embedder.aclose()
    await embedder.embed(["after release"])  # still usable: opens a new connection
    assert fake.requests[-1]["peer"] != peers[0]


@pytest.mark.parametrize("suffix", ["", "/v1"])
async def test_openai_compatible_orders_by_index_and_sends_key(
    fake: FakeEmbeddingServer, suffix: str
) -> None:
    fake.requests.clear()
    settings = embedding_settings(
        fake,
        embedding_provider="openai",
        embedding_model="text-embedding-3-small",
        embedding_base_url=fake.base_url + suffix,
        embedding_api_key="sk-test",
    )
    texts = ["alpha", "beta", "gamma"]
    vectors = await OpenAIEmbedder(settings).embed(texts)
    np.testing.assert_allclose(vectors, expected(texts), rtol=1e-5)
    assert [r["path"] for r in fake.requests] == ["/v1/embeddings"]
    assert fake.requests[0]["auth"] == "Bearer sk-test"


async def test_5xx_is_retried_then_succeeds(fake: FakeEmbeddingServer) -> None:
    fake.requests.clear()
    vectors = await OllamaEmbedder(embedding_settings(fake)).embed(["FAIL503x2-retry ok"])
    assert vectors.shape == (1, 768)
    assert len(fake.requests) == 3  # two 503s, then success


async def test_persistent_5xx_is_a_transient_error(fake: FakeEmbeddingServer) -> None:
    with pytest.raises(EmbeddingError) as info:
        await OllamaEmbedder(embedding_settings(fake)).embed(["ALWAYS503"])
    assert info.value.transient
    assert "HTTP 503" in str(info.value)


async def test_4xx_is_not_transient(fake: FakeEmbeddingServer) -> None:
    fake.requests.clear()
    with pytest.raises(EmbeddingError) as info:
        await OpenAIEmbedder(embedding_settings(fake, embedding_provider="openai")).embed(["REJECT400"])
    assert not info.value.transient
    assert len(fake.requests) == 1  # never retried


async def test_timeout_is_transient(fake: FakeEmbeddingServer) -> None:
    with pytest.raises(EmbeddingError) as info:
        await OllamaEmbedder(embedding_settings(fake, embedding_timeout_s=0.2, embedding_retries=1)).embed(
            ["SLOW1000 too slow"]
        )
    assert info.value.transient
    assert "did not answer within 0.2 s" in str(info.value)


async def test_unreachable_is_transient() -> None:
    settings = Settings(
        embedding_provider="ollama",
        embedding_model="nomic-embed-text",
        embedding_dim=768,
        embedding_base_url="http://127.0.0.1:9",
        embedding_retries=0,
    )
    with pytest.raises(EmbeddingError) as info:
        await OllamaEmbedder(settings).embed(["x"])
    assert info.value.transient and "unreachable" in str(info.value)


async def test_wrong_dimension_is_not_transient(fake: FakeEmbeddingServer) -> None:
    fake.wrong_dim = True
    try:
        with pytest.raises(EmbeddingError) as info:
            await OllamaEmbedder(embedding_settings(fake)).embed(["x"])
    finally:
        fake.wrong_dim = False
    assert not info.value.transient and "expected (1, 768)" in str(info.value)


@pytest.mark.parametrize("provider", ["ollama", "openai"])
async def test_malformed_answer_is_not_transient(fake: FakeEmbeddingServer, provider: str) -> None:
    """A 200 whose JSON is not the protocol's object is a configuration problem, never an AssertionError."""
    fake.requests.clear()
    embedder = (OllamaEmbedder if provider == "ollama" else OpenAIEmbedder)(
        embedding_settings(fake, embedding_provider=provider)
    )
    with pytest.raises(EmbeddingError) as info:
        await embedder.embed(["NOTANOBJECT"])
    assert not info.value.transient
    assert "unexpected answer (a JSON object was expected, not list)" in str(info.value)
    assert len(fake.requests) == 1  # never retried


@pytest.mark.parametrize("provider", ["ollama", "openai"])
@pytest.mark.parametrize(
    ("marker", "said"), [("NANVECTOR", "not a number"), ("ZEROVECTOR", "a vector of zeros")]
)
async def test_a_vector_holding_nan_or_only_zeros_is_not_transient(
    fake: FakeEmbeddingServer, provider: str, marker: str, said: str
) -> None:
    """A model that overflowed answers NaN (null in JSON): it was stored as NaN, so a search was a 500
    ("NaN not allowed in vector") and a document retried as an "Unexpected error" until it gave up. One
    that failed silently answers zeros: stored, its chunks had no direction (every cosine NaN)."""
    fake.requests.clear()
    embedder = (OllamaEmbedder if provider == "ollama" else OpenAIEmbedder)(
        embedding_settings(fake, embedding_provider=provider)
    )
    with pytest.raises(EmbeddingError) as info:
        await embedder.embed([marker, "fine"])
    assert not info.value.transient
    assert said in str(info.value)
    assert len(fake.requests) == 1  # never retried
