"""Import from Chroma, LlamaIndex's PGVectorStore and LangChain's PGVector (each written by the real
package), export to JSONL and back; every import is searched through the real hybrid retrieval and run
twice (no duplicates)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np
import pytest

from rag_server.collections.models import CreateCollection
from rag_server.collections.store import create_collection
from rag_server.config import Settings
from rag_server.infra.database import plain_url, sqlalchemy_url, vector_array
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.batches import create_upload_batch
from rag_server.ingestion.pipeline import DirectDocument, incoming_file, ingest_documents_direct
from rag_server.porting.models import PortingError
from rag_server.porting.service import export_jsonl, import_chroma, import_jsonl_file, import_pgvector
from rag_server.retrieval.models import SearchFilters, SearchRequest
from rag_server.retrieval.service import search
from tests.conftest import create_database

# Three source documents of two chunks each, plus one chunk that names no document.
CORPUS = {
    "field-notes/heron.txt": [
        "The grey heron hunts fish in shallow wetlands at dawn.",
        "Herons build large nests called heronries in tall trees.",
    ],
    "manuals/turbine.txt": [
        "Wind turbines convert the kinetic energy of moving air into electricity.",
        "A turbine gearbox needs fresh lubrication oil every six months.",
    ],
    "kitchen/sourdough.txt": [
        "Sourdough bread rises with wild yeast and lactobacilli bacteria.",
        "Feed the sourdough starter with flour and water every day.",
    ],
}
LONE = "Glaciers retreat as summers warm and meltwater raises the river."
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def records() -> list[tuple[str, str, dict[str, Any]]]:
    """(id, text, metadata), chunks of a document listed in reverse so only start_index orders them."""
    out = []
    for source, chunks in CORPUS.items():
        for i, text in reversed(list(enumerate(chunks))):
            metadata: dict[str, Any] = {"source": source, "start_index": i * 100, "lang": "en"}
            if source.startswith("manuals/"):
                metadata["page_label"] = str(i + 1)  # as LlamaIndex's and LangChain's PDF readers write it
            out.append((f"{Path(source).stem}-{i}", text, metadata))
    out.append(("lone-0", LONE, {"topic": "ice"}))
    return out


async def collection_docs(runtime: Runtime, name: str) -> dict[str, list[dict[str, Any]]]:
    """filename -> its chunks (text, page, metadata, embedding) in order."""
    rows = await runtime.pool.fetch(
        """
        SELECT d.filename, c.chunk_index, c.text, c.page, c.metadata, c.embedding, d.metadata AS doc_metadata
        FROM documents d JOIN collections k ON k.id = d.collection_id JOIN chunks c ON c.document_id = d.id
        WHERE k.name = $1 AND d.status = 'ready' ORDER BY d.filename, c.chunk_index
        """,
        name,
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["filename"], []).append(
            {
                "text": r["text"],
                "page": r["page"],
                "metadata": dict(r["metadata"]),
                "doc_metadata": dict(r["doc_metadata"]),
                "embedding": vector_array(r["embedding"]),
            }
        )
    return out


def without_vectors(docs: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {
        name: [{k: v for k, v in c.items() if k != "embedding"} for c in chunks]
        for name, chunks in docs.items()
    }


async def assert_found(runtime: Runtime, collection: str, query: str, expected: str) -> None:
    """The hybrid search's best hit is `expected`, found by BOTH the BM25 and the vector leg."""
    response = await search(runtime, SearchRequest(query=query, collections=[collection], top_k=5))
    top = response.results[0]
    assert top.text == expected, [h.text for h in response.results]
    assert top.bm25 is not None and top.vector is not None, top


async def assert_corpus(runtime: Runtime, collection: str) -> dict[str, list[dict[str, Any]]]:
    docs = await collection_docs(runtime, collection)
    assert {name: [c["text"] for c in chunks] for name, chunks in docs.items()} == {
        "heron.txt": CORPUS["field-notes/heron.txt"],
        "turbine.txt": CORPUS["manuals/turbine.txt"],
        "sourdough.txt": CORPUS["kitchen/sourdough.txt"],
        "lone-0.txt": [LONE],
    }
    await assert_found(runtime, collection, "where do herons nest", CORPUS["field-notes/heron.txt"][1])
    await assert_found(runtime, collection, "gearbox lubrication oil", CORPUS["manuals/turbine.txt"][1])
    return docs


@pytest.fixture(scope="module")
async def vectors(runtime: Runtime) -> dict[str, np.ndarray]:
    """The database's own model's vectors of every text (what a source made with the same model holds)."""
    texts = [text for _, text, _ in records()]
    return dict(zip(texts, await runtime.embedder.embed(texts), strict=True))


@pytest.fixture(scope="module")
def chroma_dir(tmp_path_factory: pytest.TempPathFactory, vectors: dict[str, np.ndarray]) -> Path:
    """A Chroma directory written by chromadb: `notes` (384-d MiniLM vectors, Chroma's default embedding
    function named in its configuration) and `tiny` (8-d vectors of an unknown model)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    path = tmp_path_factory.mktemp("chroma")
    client = chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))
    rows = records()
    # Explicit embeddings: Chroma's embedding function (a model download) is never called.
    client.create_collection("notes").add(
        ids=[r[0] for r in rows],
        documents=[r[1] for r in rows],
        metadatas=[r[2] for r in rows],
        embeddings=[vectors[r[1]].tolist() for r in rows],
    )
    # The same text under two sources: one document, the other a duplicate (dedup is per collection).
    client.create_collection("dups").add(
        ids=["d1", "d2"],
        documents=[LONE, LONE],
        metadatas=[{"source": "one.txt"}, {"source": "two.txt"}],
        embeddings=[vectors[LONE].tolist()] * 2,
    )
    rng = np.random.default_rng(7)
    # 384-d vectors of another model in a collection made as LlamaIndex's docs make one
    # (get_or_create_collection(name): Chroma records its `default` function, MiniLM, whatever made them).
    other = rng.normal(size=(len(rows), 384))
    client.create_collection("other384").add(
        ids=[r[0] for r in rows],
        documents=[r[1] for r in rows],
        metadatas=[r[2] for r in rows],
        embeddings=(other / np.linalg.norm(other, axis=1, keepdims=True)).tolist(),
    )
    client.create_collection("tiny").add(
        ids=[r[0] for r in rows],
        documents=[r[1] for r in rows],
        metadatas=[r[2] for r in rows],
        embeddings=rng.normal(size=(len(rows), 8)).tolist(),
    )
    return path


async def test_chroma_import_reuses_vectors_groups_by_source_and_is_idempotent(
    runtime: Runtime, chroma_dir: Path, vectors: dict[str, np.ndarray]
) -> None:
    lines: list[str] = []
    counts = await import_chroma(
        runtime,
        chroma_dir,
        collection="from-chroma",
        chroma_collection="notes",
        quiet=True,
        report=lines.append,
    )
    assert (counts.created, counts.chunks, counts.embedded, counts.duplicates) == (4, 7, 0, 0), counts
    assert any("reusing the stored 384-d vectors" in line for line in lines), lines
    docs = await assert_corpus(runtime, "from-chroma")
    heron = docs["heron.txt"]
    # Shared metadata on the document, the rest and the Chroma id on each chunk.
    assert heron[0]["doc_metadata"] == {"source": "field-notes/heron.txt", "lang": "en"}
    assert heron[1]["metadata"] == {"start_index": 100, "source_id": "heron-1"}
    # The page a PDF reader named, numbered from 1, is the chunk's page (citations show it).
    assert [c["page"] for c in docs["turbine.txt"]] == [1, 2]
    assert [c["page"] for c in heron] == [None, None]
    for chunks in docs.values():
        for chunk in chunks:
            assert np.allclose(chunk["embedding"], vectors[chunk["text"]], atol=1e-6)

    again = await import_chroma(
        runtime,
        chroma_dir,
        collection="from-chroma",
        chroma_collection="notes",
        quiet=True,
        report=lines.append,
    )
    assert (again.created, again.updated, again.unchanged, again.chunks, again.embedded) == (0, 0, 4, 0, 0)
    assert without_vectors(await collection_docs(runtime, "from-chroma")) == without_vectors(docs)
    count = await runtime.pool.fetchval(
        "SELECT count(*) FROM chunks c JOIN collections k ON k.id = c.collection_id"
        " WHERE k.name = 'from-chroma'"
    )
    assert count == 7


async def test_chroma_vectors_of_another_dimension_are_re_embedded(
    runtime: Runtime, chroma_dir: Path
) -> None:
    lines: list[str] = []
    counts = await import_chroma(
        runtime,
        chroma_dir,
        collection="chroma-tiny",
        chroma_collection="tiny",
        quiet=True,
        report=lines.append,
    )
    assert (counts.created, counts.embedded) == (4, 7)
    assert any("re-embedding" in line and "8-d" in line for line in lines), lines
    await assert_corpus(runtime, "chroma-tiny")


async def test_chroma_vectors_of_another_model_of_the_same_dimension_are_re_embedded(
    runtime: Runtime, chroma_dir: Path, vectors: dict[str, np.ndarray]
) -> None:
    """The recorded embedding function is not proof: a sample of the texts embedded here must match the
    stored vectors before they are reused (else every search of the collection compares unlike vectors)."""
    lines: list[str] = []
    counts = await import_chroma(
        runtime,
        chroma_dir,
        collection="chroma-other384",
        chroma_collection="other384",
        quiet=True,
        report=lines.append,
    )
    assert (counts.created, counts.embedded) == (4, 7), counts
    assert any("re-embedding" in line and "are not" in line for line in lines), lines
    docs = await assert_corpus(runtime, "chroma-other384")
    for chunks in docs.values():
        for chunk in chunks:
            assert np.allclose(chunk["embedding"], vectors[chunk["text"]], atol=1e-5)


HERON_IN_TINY = (
    "SELECT d.id FROM documents d JOIN collections k ON k.id = d.collection_id"
    " WHERE k.name = 'chroma-tiny' AND d.filename = 'heron.txt'"
)


async def test_a_changed_source_record_updates_its_document_in_place(
    runtime: Runtime, chroma_dir: Path
) -> None:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    before = await collection_docs(runtime, "chroma-tiny")  # imported by the test above
    heron_id = await runtime.pool.fetchval(HERON_IN_TINY)
    client = chromadb.PersistentClient(
        path=str(chroma_dir), settings=ChromaSettings(anonymized_telemetry=False)
    )
    new_text = "Herons roost together in colonies beside quiet lakes."
    # With its vector: without one Chroma would call its embedding function (a model download).
    client.get_collection("tiny").update(ids=["heron-1"], documents=[new_text], embeddings=[[0.5] * 8])
    counts = await import_chroma(
        runtime,
        chroma_dir,
        collection="chroma-tiny",
        chroma_collection="tiny",
        quiet=True,
        report=lambda _: None,
    )
    assert (counts.created, counts.updated, counts.unchanged, counts.embedded) == (0, 1, 3, 2), counts
    after = await collection_docs(runtime, "chroma-tiny")
    assert [c["text"] for c in after["heron.txt"]] == [CORPUS["field-notes/heron.txt"][0], new_text]
    assert without_vectors(after)["turbine.txt"] == without_vectors(before)["turbine.txt"]
    # The same document (same id), not a new one beside it.
    assert [r["id"] for r in await runtime.pool.fetch(HERON_IN_TINY)] == [heron_id]
    await assert_found(runtime, "chroma-tiny", "herons roost in colonies by lakes", new_text)


async def test_same_text_twice_is_one_document_and_a_duplicate(runtime: Runtime, chroma_dir: Path) -> None:
    for attempt in range(2):
        counts = await import_chroma(
            runtime,
            chroma_dir,
            collection="chroma-dups",
            chroma_collection="dups",
            quiet=True,
            report=lambda _: None,
        )
        expected = (1, 0, 1) if attempt == 0 else (0, 1, 1)
        assert (counts.created, counts.unchanged, counts.duplicates) == expected, counts
        assert counts.skipped_keys == ["two.txt"] or counts.skipped_keys == ["one.txt"]
    assert list(await collection_docs(runtime, "chroma-dups")) in (["one.txt"], ["two.txt"])


@pytest.fixture(scope="module")
async def source_url(pg_server: str) -> str:
    """A throwaway database beside ours, where LlamaIndex and LangChain write their tables."""
    url = await create_database(pg_server, "porting_src")
    conn = await asyncpg.connect(plain_url(url))
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    finally:
        await conn.close()
    return url


def write_llamaindex_table(url: str, vectors: dict[str, np.ndarray]) -> None:
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
    from llama_index.vector_stores.postgres import PGVectorStore

    store = PGVectorStore.from_params(
        connection_string=sqlalchemy_url(plain_url(url), "psycopg2"),
        async_connection_string=sqlalchemy_url(plain_url(url), "asyncpg"),
        table_name="notes",
        embed_dim=384,
    )
    nodes = []
    for record_id, text, metadata in records():
        node = TextNode(id_=record_id, text=text, embedding=vectors[text].tolist(), metadata=dict(metadata))
        if "source" in metadata:  # what a LlamaIndex ingestion pipeline records: the node's source document
            node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=metadata["source"])
        nodes.append(node)
    store.add(nodes)
    store._engine.dispose()  # type: ignore[attr-defined]


async def test_llamaindex_pgvector_table(
    runtime: Runtime, source_url: str, vectors: dict[str, np.ndarray]
) -> None:
    await asyncio.to_thread(write_llamaindex_table, source_url, vectors)
    for attempt in range(2):
        counts = await import_pgvector(
            runtime,
            source_url,
            "data_notes",
            collection="from-llamaindex",
            embedding_model=MODEL,
            quiet=True,
            report=lambda _: None,
        )
        expected = (4, 0, 0) if attempt == 0 else (0, 4, 0)
        assert (counts.created, counts.unchanged, counts.embedded) == expected, counts
    docs = await assert_corpus(runtime, "from-llamaindex")
    # LlamaIndex's serialised node is not metadata; its ref_doc_id grouped the chunks.
    meta = docs["heron.txt"][0]["doc_metadata"]
    assert "_node_content" not in meta and meta["ref_doc_id"] == "field-notes/heron.txt"
    assert np.allclose(
        docs["heron.txt"][0]["embedding"], vectors[CORPUS["field-notes/heron.txt"][0]], atol=1e-6
    )


def write_langchain_table(url: str, vectors: dict[str, np.ndarray]) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_postgres import PGVector

    store = PGVector(
        embeddings=DeterministicFakeEmbedding(size=384),
        connection=sqlalchemy_url(plain_url(url), "psycopg"),
        collection_name="lc_notes",
        use_jsonb=True,
    )
    rows = records()
    # Vectors of another model (LangChain's fake): the import must re-embed them.
    store.add_embeddings(
        texts=[r[1] for r in rows],
        embeddings=[DeterministicFakeEmbedding(size=384).embed_query(r[1]) for r in rows],
        metadatas=[r[2] for r in rows],
        ids=[r[0] for r in rows],
    )
    PGVector(
        embeddings=DeterministicFakeEmbedding(size=384),
        connection=sqlalchemy_url(plain_url(url), "psycopg"),
        collection_name="lc_other",
        use_jsonb=True,
    ).add_texts(["an unrelated collection"], ids=["other-0"])


async def test_langchain_pgvector_table_is_re_embedded(
    runtime: Runtime, source_url: str, vectors: dict[str, np.ndarray]
) -> None:
    await asyncio.to_thread(write_langchain_table, source_url, vectors)
    with pytest.raises(
        PortingError, match="choose one with --source-collection; the table holds: lc_notes, lc_other"
    ):
        await import_pgvector(
            runtime, source_url, "langchain_pg_embedding", quiet=True, report=lambda _: None
        )
    with pytest.raises(PortingError, match="no table 'nothing_here'"):
        await import_pgvector(runtime, source_url, "nothing_here", quiet=True, report=lambda _: None)
    with pytest.raises(PortingError, match="neither a LlamaIndex PGVectorStore table"):
        await import_pgvector(
            runtime, source_url, "langchain_pg_collection", quiet=True, report=lambda _: None
        )
    lines: list[str] = []
    counts = await import_pgvector(
        runtime,
        source_url,
        "langchain_pg_embedding",
        collection="from-langchain",
        source_collection="lc_notes",
        quiet=True,
        report=lines.append,
    )
    assert (counts.created, counts.embedded) == (4, 7), counts
    assert any("re-embedding" in line and "does not name its embedding model" in line for line in lines)
    docs = await assert_corpus(runtime, "from-langchain")
    # Re-embedded with the database's model: the same vectors its own ingestion would store.
    text = CORPUS["manuals/turbine.txt"][0]
    assert np.allclose(docs["turbine.txt"][0]["embedding"], vectors[text], atol=1e-5)
    again = await import_pgvector(
        runtime,
        source_url,
        "langchain_pg_embedding",
        collection="from-langchain",
        source_collection="lc_notes",
        quiet=True,
        report=lines.append,
    )
    assert (again.created, again.unchanged, again.embedded) == (0, 4, 0)


LEGACY_DDL = """
CREATE SCHEMA legacy;
CREATE TABLE legacy.langchain_pg_collection (uuid uuid PRIMARY KEY, name varchar, cmetadata json);
CREATE TABLE legacy.langchain_pg_embedding (
    uuid uuid PRIMARY KEY, collection_id uuid REFERENCES legacy.langchain_pg_collection (uuid),
    embedding vector, document varchar, cmetadata json, custom_id varchar
);
"""


async def test_langchain_community_table(
    runtime: Runtime, source_url: str, vectors: dict[str, np.ndarray]
) -> None:
    """langchain_community's older PGVector layout (uuid + custom_id), written by hand from its documented
    schema: the package itself is not installed here."""
    conn = await asyncpg.connect(plain_url(source_url))
    try:
        await conn.execute(LEGACY_DDL)
        collection = await conn.fetchval(
            "INSERT INTO legacy.langchain_pg_collection VALUES (gen_random_uuid(), 'old', '{}')"
            " RETURNING uuid"
        )
        for record_id, text, metadata in records():
            await conn.execute(
                "INSERT INTO legacy.langchain_pg_embedding"
                " VALUES (gen_random_uuid(), $1, $2::text::vector, $3, $4::json, $5)",
                collection,
                json.dumps(vectors[text].tolist()),
                text,
                json.dumps(metadata),
                record_id,
            )
    finally:
        await conn.close()
    counts = await import_pgvector(
        runtime,
        source_url,
        "legacy.langchain_pg_embedding",
        collection="from-legacy",
        embedding_model=MODEL,
        quiet=True,
        report=lambda _: None,
    )
    assert (counts.created, counts.embedded) == (4, 0), counts
    docs = await assert_corpus(runtime, "from-legacy")
    assert docs["heron.txt"][1]["metadata"]["source_id"] == "heron-1"


async def test_export_then_import_into_another_collection(
    runtime: Runtime, chroma_dir: Path, tmp_path: Path
) -> None:
    await import_chroma(
        runtime,
        chroma_dir,
        collection="exp-src",
        chroma_collection="notes",
        quiet=True,
        report=lambda _: None,
    )
    original = await collection_docs(runtime, "exp-src")
    file = tmp_path / "notes.jsonl"
    assert await export_jsonl(
        runtime, "exp-src", file, with_vectors=True, quiet=True, report=lambda _: None
    ) == (4, 7)
    lines = file.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "rag-server-export" and header["version"] == 1
    assert (header["embedding_model"], header["embedding_dim"], header["vectors"]) == (MODEL, 384, True)
    assert [json.loads(line)["type"] for line in lines[1:]] == ["document"] * 4

    for attempt in range(2):
        counts = await import_jsonl_file(
            runtime, file, collection="exp-copy", quiet=True, report=lambda _: None
        )
        assert (counts.created, counts.unchanged, counts.embedded) == (
            (4, 0, 0) if attempt == 0 else (0, 4, 0)
        )
    copy = await collection_docs(runtime, "exp-copy")
    assert copy.keys() == original.keys()
    for name, chunks in original.items():
        assert [c["text"] for c in copy[name]] == [c["text"] for c in chunks]
        assert [c["metadata"] for c in copy[name]] == [c["metadata"] for c in chunks]
        for a, b in zip(copy[name], chunks, strict=True):
            assert np.allclose(a["embedding"], b["embedding"], atol=1e-6)
    await assert_found(runtime, "exp-copy", "sourdough starter flour", CORPUS["kitchen/sourdough.txt"][1])

    # Without vectors the import embeds every chunk with the database's model.
    bare = tmp_path / "bare.jsonl"
    await export_jsonl(runtime, "exp-src", bare, quiet=True, report=lambda _: None)
    assert "embedding" not in bare.read_text(encoding="utf-8").splitlines()[1]
    counts = await import_jsonl_file(runtime, bare, collection="exp-bare", quiet=True, report=lambda _: None)
    assert (counts.created, counts.embedded) == (4, 7)
    await assert_corpus(runtime, "exp-bare")


async def test_an_export_says_which_documents_it_left_out(
    settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    """An export holds ready documents only; one still queued (or failed) was left out without a word,
    while the README called an export "everything, to leave or to copy"."""
    collection = await create_collection(runtime.pool, CreateCollection(name="half-done"))
    await ingest_documents_direct(
        runtime, [DirectDocument("ready.txt", b"Barley malt is kilned.", {})], collection_id=collection.id
    )
    await create_upload_batch(
        runtime.pool, runtime.queue, [incoming_file("waiting.txt", b"Hops are dried.")], collection.id
    )
    out = tmp_path / "half.jsonl"
    exported = await asyncio.to_thread(
        _cli, settings, "export", "--collection", "half-done", str(out), "--quiet"
    )
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.splitlines() == [
        f"exported 1 documents (1 chunks) of half-done to {out}",
        "left out 1 document not ready (1 queued): an export holds ready documents only; "
        "`rag-server tasks list --collection half-done` shows their tasks",
    ]


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": str(settings.database_url), "RAG_DATA_DIR": str(settings.data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "rag_server", *args], env=env, capture_output=True, text=True, timeout=300
    )


async def test_cli_errors_are_sentences(
    settings: Settings, runtime: Runtime, chroma_dir: Path, tmp_path: Path
) -> None:
    missing = await asyncio.to_thread(_cli, settings, "import", "chroma", str(tmp_path / "nowhere"))
    assert missing.returncode == 1
    assert f"error: {tmp_path / 'nowhere'}: no such file or directory" in missing.stderr
    not_chroma = await asyncio.to_thread(_cli, settings, "import", "chroma", str(tmp_path))
    assert not_chroma.returncode == 1 and "holds no Chroma data" in not_chroma.stdout + not_chroma.stderr
    unknown = await asyncio.to_thread(
        _cli, settings, "import", "chroma", str(chroma_dir), "--chroma-collection", "nope", "--quiet"
    )
    assert unknown.returncode == 1
    said = unknown.stdout + unknown.stderr
    assert "no Chroma collection 'nope'" in said and "it holds: dups, notes, other384, tiny" in said
    bad_file = tmp_path / "bad.jsonl"
    bad_file.write_text('{"hello": 1}\n', encoding="utf-8")
    bad = await asyncio.to_thread(_cli, settings, "import", "jsonl", str(bad_file))
    assert bad.returncode == 1 and "is not a rag-server export" in bad.stdout + bad.stderr
    for result in (missing, not_chroma, unknown, bad):
        assert "Traceback" not in result.stdout + result.stderr


async def test_cli_import_and_export_end_to_end(
    settings: Settings, runtime: Runtime, chroma_dir: Path, tmp_path: Path
) -> None:
    done = await asyncio.to_thread(
        _cli,
        settings,
        "import",
        "chroma",
        str(chroma_dir),
        "--chroma-collection",
        "notes",
        "--collection",
        "cli-notes",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "created collection cli-notes" in done.stdout and "4 created" in done.stdout
    assert "import: 100%" in done.stderr and "7/7" in done.stderr, done.stderr  # the progress bar
    out = tmp_path / "cli.jsonl"
    exported = await asyncio.to_thread(
        _cli, settings, "export", "--collection", "cli-notes", str(out), "--quiet"
    )
    assert exported.returncode == 0 and "exported 4 documents (7 chunks)" in exported.stdout
    collection_id = await runtime.pool.fetchval("SELECT id FROM collections WHERE name = 'cli-notes'")
    assert isinstance(collection_id, UUID)


def write_chroma(
    path: Path, name: str, rows: list[tuple[str, str | None, dict[str, Any]]], dim: int = 8
) -> None:
    """A Chroma collection written by chromadb, vectors of no known model (`dim`-d, re-embedded)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))
    client.create_collection(name).add(
        ids=[r[0] for r in rows],
        documents=[r[1] for r in rows],
        metadatas=[r[2] for r in rows],
        embeddings=np.random.default_rng(5).normal(size=(len(rows), dim)).tolist(),
    )


async def test_cli_import_replaces_nul_in_texts_and_metadata_as_uploads_do(
    settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    """A NUL in a record's text or in a metadata string (PostgreSQL cannot store it) failed the whole
    batch with a traceback, on every re-run; now it becomes a space, as in an upload."""
    path = tmp_path / "dirty"
    write_chroma(
        path,
        "dirty",
        [
            ("basalt-0", "Basalt columns form as lava\x00cools slowly.", {"source": "basalt.txt"}),
            ("lichen-0", "Lichen grows on bare rock.", {"source": "lichen.txt", "note": "moss\x00like"}),
            ("ice-0", LONE, {"topic": "ice"}),
        ],
    )
    command = ("import", "chroma", str(path), "--collection", "dirty", "--quiet")
    done = await asyncio.to_thread(_cli, settings, *command)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in output, output
    assert "3 created, 0 updated, 0 unchanged" in done.stdout, output
    docs = await collection_docs(runtime, "dirty")
    assert [c["text"] for c in docs["basalt.txt"]] == ["Basalt columns form as lava cools slowly."]
    assert docs["lichen.txt"][0]["doc_metadata"] == {"source": "lichen.txt", "note": "moss like"}
    again = await asyncio.to_thread(_cli, settings, *command)
    assert "0 created, 0 updated, 3 unchanged" in again.stdout, again.stdout + again.stderr


async def test_cli_import_says_which_records_had_no_text(
    settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    """Chroma keeps a record without a document text (a vector and metadata): nothing to index. Such
    records were left out without a word, and a document made only of them vanished."""
    path = tmp_path / "textless"
    write_chroma(
        path,
        "textless",
        [
            ("owl-0", "Owls hunt at night and sleep by day.", {"source": "owls.txt"}),
            ("owl-1", None, {"source": "owls.txt"}),
            ("bat-0", None, {"source": "bats.txt"}),
            ("bat-1", None, {"source": "bats.txt"}),
        ],
    )
    done = await asyncio.to_thread(
        _cli, settings, "import", "chroma", str(path), "--collection", "textless", "--quiet"
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in output, output
    assert "1 created, 0 updated, 0 unchanged, 0 skipped as duplicates, 1 skipped as unusable" in output, (
        output
    )
    assert (
        "1 record without text left out" in output and "skipped bats.txt: no text in any of its 2" in output
    )
    docs = await collection_docs(runtime, "textless")
    assert {name: [c["text"] for c in chunks] for name, chunks in docs.items()} == {
        "owls.txt": ["Owls hunt at night and sleep by day."]
    }


def export_lines(path: Path, documents: list[dict[str, Any] | str], *, vectors: bool) -> None:
    header = {
        "format": "rag-server-export",
        "version": 1,
        "collection": "hand-made",
        "embedding_model": MODEL,
        "embedding_dim": 384,
        "vectors": vectors,
    }
    lines = [json.dumps(header)] + [d if isinstance(d, str) else json.dumps(d) for d in documents]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


async def test_cli_import_skips_only_the_unusable_documents_and_re_embeds_bad_vectors(
    settings: Settings, runtime: Runtime, vectors: dict[str, np.ndarray], tmp_path: Path
) -> None:
    text = CORPUS["kitchen/sourdough.txt"][0]
    moraine = "Moraine ridges mark where the glacier stopped advancing."
    file = tmp_path / "mixed.jsonl"
    surrogate_id = "00000000-0000-0000-0000-00000000000b"
    export_lines(
        file,
        [
            # NaN in a vector: pgvector refuses it (DataError) -> embedded here instead.
            {
                "type": "document",
                "id": "00000000-0000-0000-0000-00000000000a",
                "filename": "sourdough.txt",
                "chunks": [{"index": 0, "text": text, "embedding": [float("nan")] * 384}],
            },
            # Half a character (a JSON escape of a lone surrogate): no UTF-8 for it -> skipped alone.
            {
                "type": "document",
                "id": surrogate_id,
                "filename": "broken.txt",
                "chunks": [{"index": 0, "text": "tea \ud800 kettle"}],
            },
            # NUL in metadata strings, a vector of the wrong dimension.
            {
                "type": "document",
                "id": "00000000-0000-0000-0000-00000000000c",
                "filename": "moraine.txt",
                "metadata": {"note": "till\x00gravel"},
                "chunks": [
                    {"index": 0, "text": moraine, "metadata": {"k": "v\x00"}, "embedding": [1.0, 2.0]}
                ],
            },
            "{this line is cut",
            # No chunks: it was left out without a word, counted nowhere.
            {
                "type": "document",
                "id": "00000000-0000-0000-0000-00000000000d",
                "filename": "e.txt",
                "chunks": [],
            },
        ],
        vectors=True,
    )
    command = ("import", "jsonl", str(file), "--collection", "mixed", "--quiet")
    done = await asyncio.to_thread(_cli, settings, *command)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in output, output
    assert "2 created, 0 updated, 0 unchanged" in done.stdout and "3 skipped as unusable" in done.stdout, (
        output
    )
    assert "2 embedded here" in done.stdout, output
    assert f"skipped {surrogate_id}: chunk 0 text: lone surrogate U+D800" in done.stdout, output
    assert "skipped line 5: not a document line" in done.stdout, output
    assert (
        "skipped line 6: 00000000-0000-0000-0000-00000000000d: no chunks, nothing to store" in done.stdout
    ), output
    docs = await collection_docs(runtime, "mixed")
    assert sorted(docs) == ["moraine.txt", "sourdough.txt"]
    assert np.allclose(docs["sourdough.txt"][0]["embedding"], vectors[text], atol=1e-5)
    assert docs["moraine.txt"][0]["doc_metadata"] == {"note": "till gravel"}
    assert docs["moraine.txt"][0]["metadata"] == {"k": "v "}
    again = await asyncio.to_thread(_cli, settings, *command)
    assert "0 created, 0 updated, 2 unchanged" in again.stdout, again.stdout + again.stderr
    assert "3 skipped as unusable" in again.stdout, again.stdout


async def test_an_import_that_writes_nothing_fails_and_leaves_no_collection(
    settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    """A cut copy of an export (its one document line ends mid-way) exited 0 and left the collection
    it created, empty: a script could not tell it from a success."""
    file = tmp_path / "cut.jsonl"
    export_lines(
        file, ['{"type": "document", "id": "00000000-0000-0000-0000-0000000000e1", "filen'], vectors=False
    )
    done = await asyncio.to_thread(
        _cli, settings, "import", "jsonl", str(file), "--collection", "cut", "--quiet"
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in output, output
    assert "skipped line 2: not a document line" in output, output
    assert "removed the collection cut this import created" in output, output
    assert done.stderr.rstrip().endswith("nothing was imported: its one document was unusable"), output
    async with runtime.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM collections WHERE name = 'cut'") == 0


async def test_an_empty_chroma_collection_fails_and_leaves_no_collection(
    settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    """An empty Chroma collection (a wrong --chroma-collection, a store whose app never added) exited 0
    and left the collection it created, empty: the README says an import that finds nothing it can
    store exits 1 and removes it."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    path = tmp_path / "empty"
    client = chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))
    client.create_collection("nothing")
    await fails_leaving_no_collection(settings, runtime, ["chroma", str(path)], "the source holds no records")


async def fails_leaving_no_collection(
    settings: Settings, runtime: Runtime, source: list[str], why: str
) -> None:
    """`import SOURCE...` into a new collection finds nothing to store: exit 1, one line saying `why`,
    and the collection it created removed."""
    done = await asyncio.to_thread(
        _cli, settings, "import", *source, "--collection", "nothing-here", "--quiet"
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in output, output
    assert "removed the collection nothing-here this import created" in output, output
    assert done.stderr.rstrip().endswith(f"nothing was imported: {why}"), output
    async with runtime.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM collections WHERE name = 'nothing-here'") == 0


async def test_an_export_file_with_no_document_fails_and_leaves_no_collection(
    settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    """A JSONL file of the header alone (a copy cut after its first line) exited 0 and left the
    collection it created, empty, where an empty Chroma collection exits 1 and removes it: the README
    says an import that finds nothing it can store (a cut file) exits 1."""
    file = tmp_path / "header-only.jsonl"
    export_lines(file, [], vectors=False)
    await fails_leaving_no_collection(settings, runtime, ["jsonl", str(file)], "the file holds no documents")


async def test_a_line_that_is_not_utf8_is_skipped_alone(
    settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    """One line of bytes that are not UTF-8 (a copy damaged in transit) stopped the whole import with
    Python's "'utf-8' codec can't decode byte 0xff in position 540" and wrote nothing, where a line that
    is not JSON is skipped alone; a binary file (a backup given by mistake) said the same, not that it
    is no export."""
    good = [
        {"type": "document", "id": f"00000000-0000-0000-0000-0000000000f{n}", "filename": f"u{n}.md"}
        | {"chunks": [{"index": 0, "text": f"Document {n} about kingfishers."}]}
        for n in (1, 2)
    ]
    file = tmp_path / "damaged.jsonl"
    export_lines(file, [good[0], "PLACEHOLDER", good[1]], vectors=False)
    file.write_bytes(file.read_bytes().replace(b"PLACEHOLDER", b'{"type": "document", "id": "\xff\xfe'))
    done = await asyncio.to_thread(
        _cli, settings, "import", "jsonl", str(file), "--collection", "damaged", "--quiet"
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in output, output
    assert "imported into damaged: 2 created" in output and "skipped line 3: " in output, output

    binary = tmp_path / "backup.jsonl"
    binary.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe binary\n\xc8\x00")
    refused = await asyncio.to_thread(
        _cli, settings, "import", "jsonl", str(binary), "--collection", "binary", "--quiet"
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.rstrip().endswith(
        f"{binary} is not a rag-server export (its first line is not the export header)"
    ), refused.stderr


async def test_a_record_the_database_refuses_is_skipped_alone(runtime: Runtime, tmp_path: Path) -> None:
    """What cleaning cannot foresee: a record too large for to_tsvector (the BM25 triggers' tokenizer)
    fails its batch's transaction; the batch is written again a document at a time."""
    huge = " ".join(f"w{i:06d}q" for i in range(200_000))
    file = tmp_path / "huge.jsonl"
    export_lines(
        file,
        [
            {"type": "document", "id": "1", "filename": "fine.txt", "chunks": [{"index": 0, "text": LONE}]},
            {"type": "document", "id": "2", "filename": "huge.txt", "chunks": [{"index": 0, "text": huge}]},
        ],
        vectors=False,
    )
    lines: list[str] = []
    counts = await import_jsonl_file(runtime, file, collection="huge", quiet=True, report=lines.append)
    assert (counts.created, counts.chunks) == (1, 1), counts
    assert [key for key, _ in counts.unusable] == ["2"], counts.unusable
    assert any(line.startswith("skipped 2: ") and "tsvector" in line for line in lines), lines
    assert list(await collection_docs(runtime, "huge")) == ["fine.txt"]


async def test_an_imported_decomposed_record_is_stored_composed_and_found_either_way(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Parsed text is stored composed (NFC) and every query is composed; an import stored a record's text
    as given (NFD, as macOS writes): shown and cited decomposed, missed by a "Contains" filter typed
    composed, and on ParadeDB (pg_search does not compose) by BM25 for the word however it was typed."""
    decomposed = "Die Gro\u0308ße der Tu\u0308r steht im Datenblatt."
    composed = unicodedata.normalize("NFC", decomposed)
    assert decomposed != composed
    file = tmp_path / "nfd.jsonl"
    export_lines(
        file,
        [
            {
                "type": "document",
                "id": "nfd-1",
                "filename": "Gro\u0308ße.txt",
                "chunks": [{"index": 0, "text": decomposed, "heading_path": "Ma\u00dfe > Gro\u0308ße"}],
            }
        ],
        vectors=False,
    )
    for attempt in range(2):  # a re-run finds it unchanged
        counts = await import_jsonl_file(runtime, file, collection="nfd", quiet=True, report=lambda _: None)
        assert (counts.created, counts.unchanged) == ((1, 0) if attempt == 0 else (0, 1)), counts
    for query in ("Größe", "Gro\u0308ße"):
        response = await search(
            runtime, SearchRequest(query=query, collections=["nfd"], search_type="bm25", top_k=5)
        )
        assert [h.text for h in response.results] == [composed], (ascii(query), response.results)
    # "Contains" (where_document) compares the stored text as it is: a word typed composed finds it.
    request = SearchRequest(
        query="Datenblatt", collections=["nfd"], filters=SearchFilters(text={"$contains": "Größe der Tür"})
    )
    assert [h.text for h in (await search(runtime, request)).results] == [composed]
    row = await runtime.pool.fetchrow(
        """
        SELECT d.filename, c.text, c.search_text, c.heading_path
        FROM documents d JOIN collections k ON k.id = d.collection_id JOIN chunks c ON c.document_id = d.id
        WHERE k.name = 'nfd'
        """
    )
    assert row is not None
    assert row["text"] == composed and composed in row["search_text"], row
    assert all(unicodedata.is_normalized("NFC", row[k]) for k in ("filename", "search_text", "heading_path"))


async def test_a_source_id_of_the_records_own_metadata_is_kept(runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "ids"
    write_chroma(
        path,
        "ids",
        [
            ("r1", CORPUS["field-notes/heron.txt"][0], {"source": "heron.txt", "source_id": "crm-1"}),
            ("r2", CORPUS["field-notes/heron.txt"][1], {"source": "heron.txt", "source_id": "crm-1"}),
            ("r3", CORPUS["manuals/turbine.txt"][0], {"source": "turbine.txt", "source_id": "a", "n": 1}),
            ("r4", CORPUS["manuals/turbine.txt"][1], {"source": "turbine.txt", "source_id": "b", "n": 2}),
            ("r5", LONE, {"source": "lone.txt"}),
        ],
    )
    counts = await import_chroma(runtime, path, collection="ids", quiet=True, report=lambda _: None)
    assert counts.created == 3, counts
    docs = await collection_docs(runtime, "ids")
    # Shared by every chunk: on the document; the record's id goes beside it, not over it.
    assert docs["heron.txt"][0]["doc_metadata"] == {"source": "heron.txt", "source_id": "crm-1"}
    assert [c["metadata"] for c in docs["heron.txt"]] == [
        {"source_record_id": "r1"},
        {"source_record_id": "r2"},
    ]
    assert [c["metadata"] for c in docs["turbine.txt"]] == [
        {"source_id": "a", "n": 1, "source_record_id": "r3"},
        {"source_id": "b", "n": 2, "source_record_id": "r4"},
    ]
    assert [c["metadata"] for c in docs["lone.txt"]] == [{"source_id": "r5"}]


async def test_an_export_to_a_symbolic_link_writes_its_target(
    settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    """`export ... LINK` renamed its temporary file over the link: the link became a regular file and its
    target kept the old export (a `latest.jsonl` link to a dated file, a dotfiles-managed path)."""
    collection = await create_collection(runtime.pool, CreateCollection(name="linked"))
    await ingest_documents_direct(
        runtime, [DirectDocument("wort.txt", b"Wort is boiled with hops.", {})], collection_id=collection.id
    )
    (tmp_path / "exports").mkdir()
    target = tmp_path / "exports" / "2026-12-07.jsonl"
    target.write_text("an older export\n", encoding="utf-8")
    link, fresh = tmp_path / "latest.jsonl", tmp_path / "fresh.jsonl"
    link.symlink_to(Path("exports") / target.name)
    fresh.symlink_to(tmp_path / "exports" / "new.jsonl")  # dangling: its target is created, as by `>`
    for out, written in ((link, target), (fresh, tmp_path / "exports" / "new.jsonl")):
        exported = await asyncio.to_thread(
            _cli, settings, "export", "--collection", "linked", str(out), "--quiet"
        )
        assert exported.returncode == 0, exported.stderr
        assert exported.stdout.splitlines()[0] == f"exported 1 documents (1 chunks) of linked to {out}"
        assert out.is_symlink() and out.resolve() == written
        lines = written.read_text(encoding="utf-8").splitlines()
        assert json.loads(lines[0])["format"] == "rag-server-export"
        assert json.loads(lines[1])["filename"] == "wort.txt"
    # Nothing else is left: no .partial beside the link or the target.
    assert sorted(os.listdir(tmp_path)) == ["exports", "fresh.jsonl", "latest.jsonl"]
    assert sorted(os.listdir(tmp_path / "exports")) == ["2026-12-07.jsonl", "new.jsonl"]


async def test_cli_refuses_a_directory_where_a_file_is_read_or_written(
    settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    folder = tmp_path / "some-dir"
    folder.mkdir()
    exported = await asyncio.to_thread(_cli, settings, "export", "--collection", "default", str(folder))
    imported = await asyncio.to_thread(_cli, settings, "import", "jsonl", str(folder), "--quiet")
    for result in (exported, imported):
        output = result.stdout + result.stderr
        assert result.returncode != 0 and "Traceback" not in output, output
        assert f"error: {folder} is a folder" in output, output
    assert list(folder.iterdir()) == []  # nothing written in it either (no .partial file)


async def test_a_failed_import_leaves_no_collection_it_created_behind(
    settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    """Nothing was written: the collection it made for it would only be an empty name to clean up. An
    import that wrote batches keeps its collection (tested by the interruption tests)."""
    bad = tmp_path / "not-an-export.jsonl"
    bad.write_text('{"format": "something-else"}\n', encoding="utf-8")
    failed = await asyncio.to_thread(
        _cli, settings, "import", "jsonl", str(bad), "--collection", "never-made"
    )
    assert failed.returncode != 0 and "Traceback" not in failed.stdout + failed.stderr, failed.stderr
    assert "removed the collection never-made" in failed.stdout + failed.stderr
    names = [r["name"] for r in await runtime.pool.fetch("SELECT name FROM collections")]
    assert "never-made" not in names
