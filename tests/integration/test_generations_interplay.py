"""Imports, exports, the LlamaIndex retrievers and `rag-server check` after an embedding-model switch.

The database starts on the local MiniLM (generation 1, 384-d); `reembed.start` creates generation 2 (a
fake OpenAI-compatible model, 32-d) and queues its backfill, whose messages this process hands to the
worker's own handler (no worker subprocess: the re-embed itself is tested in test_reembed), then
`reembed.switch` makes it the searched one. Generation 1 stays retired until the `finalized` fixture
drops it. The fake model's vectors are a hash of the text: a query equal to a chunk's text finds that
chunk at cosine 1 only if the vector leg searches generation 2's vectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag_server.errors import ConflictError
from rag_server.evaluation.peers import read_chunks_for_peer
from rag_server.generations import backfill, reembed
from rag_server.generations.backfill import embed_for_generations, handle_reembed
from rag_server.generations.store import Generation, list_generations
from rag_server.infra.database import owner_connection, vector_array
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.integrity import check_integrity
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from rag_server.integrations.llamaindex_retrievers import HybridRetriever, VectorRetriever
from rag_server.porting.service import export_jsonl, import_chroma, import_jsonl_file
from rag_server.porting.vector_check import SAMPLE
from rag_server.retrieval.models import SearchRequest
from rag_server.retrieval.service import search
from tests.fakes.embedding_server import FakeEmbeddingServer, fake_vector
from tests.support.sample_files import long_text

NEW_MODEL = "fake-embed-32"
DIM = 32
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = {
    "heron.txt": [
        "The grey heron hunts fish in shallow wetlands at dawn.",
        "Herons build large nests called heronries in tall trees.",
    ],
    "turbine.txt": [
        "Wind turbines convert the kinetic energy of moving air into electricity.",
        "A turbine gearbox needs fresh lubrication oil every six months.",
    ],
}
ALL_TEXTS = [t for chunks in TEXTS.values() for t in chunks]


def silent(_: str) -> None:
    return None


@pytest.fixture(scope="module")
def new_model() -> Any:
    server = FakeEmbeddingServer(dim=DIM).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def switched(runtime: Runtime, new_model: FakeEmbeddingServer) -> Generation:
    await ingest_documents_direct(
        runtime, [DirectDocument("before.txt", long_text(300, seed=3).encode(), {})]
    )
    spec = reembed.ModelSpec("openai", NEW_MODEL, DIM, new_model.base_url)
    generation = await reembed.start(runtime, spec, silent)
    # The workers' part, here: every backfill message through the worker's own handler.
    while messages := await runtime.queue.read(60, qty=10):
        for msg in messages:
            await handle_reembed(runtime, msg)
    await reembed.switch(runtime, generation, silent)
    states = {g.id: g.state for g in await list_generations(runtime.pool)}
    assert states == {1: "retired", generation.id: "active"}
    return generation


@pytest.fixture(scope="module")
async def finalized(runtime: Runtime, switched: Generation) -> Generation:
    await reembed.finalize(runtime, silent)
    states = {g.id: g.state for g in await list_generations(runtime.pool)}
    assert states == {1: "dropped", switched.id: "active"}
    return switched


@pytest.fixture(scope="module")
def chroma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Chroma collection whose vectors were made by the new model (the fake's own vectors)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    path = tmp_path_factory.mktemp("chroma")
    client = chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))
    rows = [(f"{name}-{i}", text, name) for name, chunks in TEXTS.items() for i, text in enumerate(chunks)]
    client.create_collection("fake32").add(
        ids=[r[0] for r in rows],
        documents=[r[1] for r in rows],
        metadatas=[{"source": r[2], "start_index": int(r[0][-1])} for r in rows],
        embeddings=[fake_vector(r[1], DIM) for r in rows],
    )
    return path


async def vectors_of(runtime: Runtime, collection: str, generation_id: int) -> dict[str, np.ndarray | None]:
    """text -> the chunk's vector of the generation (generation 1: chunks.embedding), None if absent."""
    if generation_id == 1:
        sql = "SELECT c.text, c.embedding FROM chunks c"
    else:
        sql = (
            "SELECT c.text, v.embedding FROM chunks c"
            f" LEFT JOIN chunk_vectors v ON v.chunk_id = c.id AND v.generation_id = {generation_id}"
        )
    rows = await runtime.pool.fetch(
        f"{sql} JOIN collections k ON k.id = c.collection_id WHERE k.name = $1", collection
    )
    out: dict[str, np.ndarray | None] = {}
    for r in rows:
        value = r["embedding"]
        out[r["text"]] = None if value is None else vector_array(value)
    return out


def same_direction(stored: np.ndarray | None, text: str) -> bool:
    """The stored vector is the fake model's for `text` (the embedder unit-normalises; a reused source
    vector is kept as it was)."""
    assert stored is not None
    expected = np.asarray(fake_vector(text, DIM))
    return bool(np.dot(stored, expected) / np.linalg.norm(stored) / np.linalg.norm(expected) > 0.9999)


async def assert_found_by_vectors(runtime: Runtime, collection: str, text: str) -> None:
    """A vector search, a hybrid search and both LlamaIndex retrievers find the chunk by its own text
    (cosine 1 under the fake model)."""
    vector = await search(
        runtime, SearchRequest(query=text, search_type="vector", collections=[collection], top_k=3)
    )
    assert vector.results[0].text == text, [h.text for h in vector.results]
    assert vector.results[0].score == pytest.approx(1.0, abs=1e-4)
    hybrid = await search(runtime, SearchRequest(query=text, collections=[collection], top_k=3))
    assert hybrid.results[0].text == text
    assert hybrid.results[0].vector is not None and hybrid.results[0].vector.rank == 1
    [best, *_] = await VectorRetriever(runtime, top_k=3, collections=[collection]).aretrieve(text)
    assert best.node.get_content() == text and best.score == pytest.approx(1.0, abs=1e-4)
    [best, *_] = await HybridRetriever(runtime, top_k=3, collections=[collection]).aretrieve(text)
    assert best.node.get_content() == text and best.node.metadata["vector_rank"] == 1


def embedded_by_fake(fake: FakeEmbeddingServer) -> set[str]:
    return {t for r in fake.requests for t in r["body"]["input"]}


async def test_chroma_import_reuses_vectors_of_the_active_generation_and_embeds_the_retired_one(
    runtime: Runtime, switched: Generation, new_model: FakeEmbeddingServer, chroma_dir: Path
) -> None:
    lines: list[str] = []
    counts = await import_chroma(
        runtime,
        chroma_dir,
        collection="chroma-g2",
        chroma_collection="fake32",
        embedding_model=NEW_MODEL,
        quiet=True,
        report=lines.append,
    )
    assert (counts.created, counts.chunks, counts.embedded) == (2, 4, 0), counts
    assert f"reusing the stored {DIM}-d vectors of {NEW_MODEL}" in lines, lines
    # Reused: sent to the new model once, in the sample that checks the stored vectors are its
    # (porting/vector_check.py), never embedded to be stored.
    carrying = [r for r in new_model.requests if set(r["body"]["input"]) & set(ALL_TEXTS)]
    assert len(carrying) == 1 and len(carrying[0]["body"]["input"]) <= SAMPLE, carrying
    active = await vectors_of(runtime, "chroma-g2", switched.id)
    for text in ALL_TEXTS:
        assert np.allclose(active[text], fake_vector(text, DIM), atol=1e-6)  # type: ignore[arg-type]
    # The retired generation (a rollback would search it) got MiniLM's vectors, embedded here.
    retired = await vectors_of(runtime, "chroma-g2", 1)
    assert all(v is not None and v.shape == (384,) for v in retired.values()), retired
    await assert_found_by_vectors(runtime, "chroma-g2", TEXTS["turbine.txt"][1])
    report = await check_integrity(runtime.pool, runtime.settings.queue_name)
    assert not [v for v in report.violations if v.check == "missing vectors"], report.lines()


async def test_an_import_of_the_retired_model_reuses_its_vectors_for_it_and_embeds_the_active_one(
    runtime: Runtime, switched: Generation, new_model: FakeEmbeddingServer, tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    stored = {t: rng.standard_normal(384).astype(np.float32) for t in TEXTS["heron.txt"]}
    header = {"format": "rag-server-export", "version": 1, "collection": "x"}
    header |= {"embedding_model": MINILM, "embedding_dim": 384, "vectors": True}
    chunks = [
        {"index": i, "text": t, "embedding": stored[t].tolist()} for i, t in enumerate(TEXTS["heron.txt"])
    ]
    document = {"type": "document", "id": "old-heron", "filename": "heron.txt", "chunks": chunks}
    file = tmp_path / "minilm.jsonl"
    file.write_text(json.dumps(header) + "\n" + json.dumps(document) + "\n", encoding="utf-8")
    lines: list[str] = []
    counts = await import_jsonl_file(runtime, file, collection="minilm-g1", quiet=True, report=lines.append)
    assert (counts.created, counts.embedded) == (1, 2), counts
    assert any(
        f"re-embedding with {NEW_MODEL}" in line and "reused for generation 1" in line for line in lines
    )
    base = await vectors_of(runtime, "minilm-g1", 1)
    for text, vector in stored.items():
        assert np.allclose(base[text], vector, atol=1e-5)  # type: ignore[arg-type]
    assert set(TEXTS["heron.txt"]) <= embedded_by_fake(new_model)
    await assert_found_by_vectors(runtime, "minilm-g1", TEXTS["heron.txt"][0])


async def test_export_names_the_active_generation_and_carries_its_vectors(
    runtime: Runtime, switched: Generation, tmp_path: Path
) -> None:
    file = tmp_path / "g2.jsonl"
    assert await export_jsonl(runtime, "chroma-g2", file, with_vectors=True, quiet=True, report=silent) == (
        2,
        4,
    )
    header, *docs = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
    assert (header["embedding_model"], header["embedding_dim"], header["vectors"]) == (NEW_MODEL, DIM, True)
    exported = {c["text"]: c["embedding"] for d in docs for c in d["chunks"]}
    assert exported.keys() == set(ALL_TEXTS)
    for text, vector in exported.items():
        assert np.allclose(vector, fake_vector(text, DIM), atol=1e-6)


async def test_after_finalize_imports_write_only_the_active_generation(
    runtime: Runtime,
    finalized: Generation,
    new_model: FakeEmbeddingServer,
    tmp_path: Path,
) -> None:
    with_vectors, bare = tmp_path / "g2.jsonl", tmp_path / "bare.jsonl"
    await export_jsonl(runtime, "chroma-g2", with_vectors, with_vectors=True, quiet=True, report=silent)
    await export_jsonl(runtime, "chroma-g2", bare, quiet=True, report=silent)
    header = json.loads(with_vectors.read_text(encoding="utf-8").splitlines()[0])
    assert (header["embedding_model"], header["embedding_dim"]) == (NEW_MODEL, DIM)

    counts = await import_jsonl_file(runtime, with_vectors, collection="copy-g2", quiet=True, report=silent)
    assert (counts.created, counts.chunks, counts.embedded) == (2, 4, 0), counts
    # Without vectors every chunk is embedded, by the active generation's model (not the configured one).
    sent = len(new_model.requests)
    counts = await import_jsonl_file(runtime, bare, collection="bare-g2", quiet=True, report=silent)
    assert (counts.created, counts.chunks, counts.embedded) == (2, 4, 4), counts
    assert set(ALL_TEXTS) <= {t for r in new_model.requests[sent:] for t in r["body"]["input"]}
    for collection in ("copy-g2", "bare-g2"):
        assert set((await vectors_of(runtime, collection, 1)).values()) == {None}  # generation 1 is gone
        active = await vectors_of(runtime, collection, finalized.id)
        for text in ALL_TEXTS:
            assert same_direction(active[text], text)
        await assert_found_by_vectors(runtime, collection, TEXTS["heron.txt"][1])
    report = await check_integrity(runtime.pool, runtime.settings.queue_name)
    assert not [v for v in report.violations if v.check == "missing vectors"], report.lines()


async def test_the_llamaindex_peer_refuses_a_switched_database(
    runtime: Runtime, switched: Generation
) -> None:
    """evaluation/peers fills its own table from generation 1's vectors: on a database searching another
    generation it says so instead of measuring the wrong model."""
    async with owner_connection(runtime.database_url) as conn:
        with pytest.raises(ConflictError, match=f"searches generation {switched.id}"):
            await read_chunks_for_peer(conn)


async def test_an_import_whose_generations_changed_meanwhile_embeds_again(
    runtime: Runtime, finalized: Generation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first embedding misses the active generation (as a writer that embedded before a switch):
    the write is refused under the generations lock and the batch is embedded again."""
    calls: list[int] = []

    async def stale_first(*args: Any, **kwargs: Any) -> tuple[Any, dict[int, np.ndarray]]:
        base, later = await embed_for_generations(*args, **kwargs)
        calls.append(len(later))
        return (base, {}) if len(calls) == 1 else (base, later)

    monkeypatch.setattr(backfill, "embed_for_generations", stale_first)
    bare = tmp_path / "bare.jsonl"
    await export_jsonl(runtime, "chroma-g2", bare, quiet=True, report=silent)
    counts = await import_jsonl_file(runtime, bare, collection="retried-g2", quiet=True, report=silent)
    assert calls == [1, 1]
    assert (counts.created, counts.chunks, counts.embedded) == (2, 4, 4), counts
    active = await vectors_of(runtime, "retried-g2", finalized.id)
    assert all(same_direction(active[text], text) for text in ALL_TEXTS)
