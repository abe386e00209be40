"""Collections: CRUD over HTTP, 409s, force delete in one transaction, per-collection dedup, the search
scope inside both legs before LIMIT (a small collection inside a large one), 404 for an unknown one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import numpy as np
import pytest
from alembic import command

from rag_server.chat.models import QueryRequest
from rag_server.chat.service import ChatService
from rag_server.collections import store
from rag_server.collections.models import DEFAULT_COLLECTION_ID, CreateCollection
from rag_server.config import Settings
from rag_server.infra.database import owner_connection, vector_literal
from rag_server.infra.migrations import alembic_config
from rag_server.infra.runtime import Runtime, open_runtime
from rag_server.ingestion.batches import create_upload_batch
from rag_server.ingestion.documents import insert_new_document
from rag_server.ingestion.pipeline import DirectDocument, incoming_file, ingest_documents_direct
from rag_server.retrieval.models import SearchRequest
from rag_server.retrieval.service import embed_query, search
from rag_server.retrieval.vector import vector_leg, vector_sql
from tests.conftest import create_database
from tests.support.processes import process_env

QUERY = "zebrafish heart regeneration"
SMALL_TEXTS = [
    f"Study {i}: zebrafish heart regeneration after cryoinjury, with {topic}."
    for i, topic in enumerate(
        [
            "cardiomyocyte proliferation",
            "epicardial signalling",
            "macrophage recruitment",
            "fibrosis",
            "retinoic acid",
            "nerve dependence",
            "scar resolution",
            "valve repair",
        ]
    )
]


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


@pytest.fixture(scope="module")
async def scoped(runtime: Runtime) -> dict[str, Any]:
    """`small`: 8 relevant documents; `big`: 400 decoys that match the query better in both legs."""
    small = await store.create_collection(runtime.pool, CreateCollection(name="small"))
    big = await store.create_collection(runtime.pool, CreateCollection(name="big"))
    decoys = [
        DirectDocument(f"decoy-{i}.txt", f"Zebrafish heart regeneration. Zebrafish heart {i}.".encode(), {})
        for i in range(400)
    ]
    small_docs = [DirectDocument(f"small-{i}.txt", t.encode(), {}) for i, t in enumerate(SMALL_TEXTS)]
    await ingest_documents_direct(runtime, decoys, collection_id=big.id)
    small_ids = await ingest_documents_direct(runtime, small_docs, collection_id=small.id)
    return {"small": small, "big": big, "small_ids": set(small_ids)}


async def _chunk_collections(runtime: Runtime, chunk_ids: list[int]) -> list[UUID]:
    rows = await runtime.pool.fetch(
        "SELECT id, collection_id FROM chunks WHERE id = ANY($1::bigint[])", chunk_ids
    )
    by_id = {r["id"]: r["collection_id"] for r in rows}
    return [by_id[c] for c in chunk_ids]


async def _exact_vector_top(runtime: Runtime, collection_id: UUID, k: int) -> list[int]:
    """Brute force over the collection's stored vectors: what the HNSW leg must return."""
    rows = await runtime.pool.fetch(
        "SELECT id, embedding FROM chunks WHERE collection_id = $1", collection_id
    )
    query = await embed_query(runtime, QUERY)
    scored = sorted(
        (-float(np.dot(np.asarray(r["embedding"], dtype=np.float32), query)), r["id"]) for r in rows
    )
    return [chunk_id for _, chunk_id in scored[:k]]


@pytest.mark.parametrize("ef", [None, 10])
@pytest.mark.parametrize("mode", ["vector", "bm25", "hybrid"])
async def test_a_small_collection_inside_a_large_one_gets_its_full_top_k(
    runtime: Runtime, scoped: dict[str, Any], mode: str, ef: int | None
) -> None:
    """ef_search=10: without the iterative scan the HNSW scan would yield 10 rows, decoys all."""
    small = scoped["small"]
    unscoped = await search(
        runtime, SearchRequest(query=QUERY, top_k=5, search_type=mode, collections=["big"])
    )
    assert len(unscoped.results) == 5  # the decoys alone fill a top 5: the scope has work to do

    result = await search(
        runtime, SearchRequest(query=QUERY, top_k=5, search_type=mode, collections=["small"], ef_search=ef)
    )
    hits = [h.chunk_id for h in result.results]
    assert len(hits) == 5
    assert set(await _chunk_collections(runtime, hits)) == {small.id}
    assert {h.document_id for h in result.results} <= scoped["small_ids"]
    deep = await search(
        runtime, SearchRequest(query=QUERY, top_k=50, search_type=mode, collections=["small"], ef_search=ef)
    )
    assert len(deep.results) == len(SMALL_TEXTS)
    assert hits == [h.chunk_id for h in deep.results][:5]
    if mode == "vector":
        assert hits == await _exact_vector_top(runtime, small.id, 5)


async def test_search_across_two_collections_returns_both(runtime: Runtime, scoped: dict[str, Any]) -> None:
    both = await search(
        runtime,
        SearchRequest(
            query="zebrafish cryoinjury",
            top_k=20,
            search_type="bm25",
            collections=["small", str(scoped["big"].id)],
        ),
    )
    found = set(await _chunk_collections(runtime, [h.chunk_id for h in both.results]))
    assert found == {scoped["small"].id, scoped["big"].id}
    default_only = await search(runtime, SearchRequest(query=QUERY, top_k=5, search_type="hybrid"))
    assert default_only.results == []  # nothing was put into `default`


async def test_chat_answers_only_from_the_collections_it_names(
    runtime: Runtime, scoped: dict[str, Any]
) -> None:
    chat = ChatService(runtime)
    small = await chat.answer(QueryRequest(query=QUERY, top_k=5, collections=["small"]))
    assert len(small.sources) == 5
    assert {s.document_id for s in small.sources} <= scoped["small_ids"]
    # The decoys match better: without the scope they would be every source.
    big = await chat.answer(QueryRequest(query=QUERY, top_k=5, collections=["big"]))
    assert big.sources and not {s.document_id for s in big.sources} & scoped["small_ids"]
    assert (await chat.answer(QueryRequest(query=QUERY, top_k=5))).sources == []  # `default` is empty


async def test_collection_crud_and_conflicts(app_client: httpx.AsyncClient) -> None:
    c = app_client
    created = await ok(await c.post("/collections", json={"name": "papers", "description": "PDFs"}), 201)
    assert created["name"] == "papers" and created["document_count"] == 0
    await ok(await c.post("/collections", json={"name": "papers"}), 409)
    for bad in ("Papers", "-x", "a b", "", "x" * 64, "é", "a\n", str(DEFAULT_COLLECTION_ID)):
        await ok(await c.post("/collections", json={"name": bad}), 422)
    assert (await ok(await c.get(f"/collections/{created['id']}")))["name"] == "papers"
    listed = await ok(await c.get("/collections"))
    assert {"default", "papers"} <= {i["name"] for i in listed["items"]}

    renamed = await ok(await c.patch("/collections/papers", json={"name": "articles", "description": "new"}))
    assert renamed["id"] == created["id"] and renamed["description"] == "new"
    await ok(await c.get("/collections/papers"), 404)
    await ok(await c.patch("/collections/articles", json={"name": "default"}), 409)
    await ok(await c.patch("/collections/articles", json={"name": "Bad Name"}), 422)
    await ok(await c.patch("/collections/default", json={"name": "other"}), 409)
    await ok(await c.delete("/collections/default"), 409)
    await ok(await c.delete("/collections/default", params={"force": "true"}), 409)
    await ok(await c.delete("/collections/articles"), 204)
    await ok(await c.get(f"/collections/{created['id']}"), 404)


async def test_hybrid_alpha_is_set_at_creation_as_by_patch(app_client: httpx.AsyncClient) -> None:
    # It was dropped silently: a 201 with hybrid_alpha null.
    created = await ok(
        await app_client.post("/collections", json={"name": "weighted", "hybrid_alpha": 0.5}), 201
    )
    assert created["hybrid_alpha"] == 0.5
    assert (await ok(await app_client.get("/collections/weighted")))["hybrid_alpha"] == 0.5
    unset = await ok(
        await app_client.post("/collections", json={"name": "unweighted", "hybrid_alpha": None}), 201
    )
    assert unset["hybrid_alpha"] is None
    for bad in (1.5, -0.1, "0.5", True):  # PATCH's rule: a JSON number in [0, 1]
        await ok(await app_client.post("/collections", json={"name": "bad-alpha", "hybrid_alpha": bad}), 422)
        await ok(await app_client.patch("/collections/weighted", json={"hybrid_alpha": bad}), 422)
    await ok(await app_client.get("/collections/bad-alpha"), 404)


async def test_same_file_twice_in_one_collection_is_a_duplicate_in_two_it_is_stored_twice(
    app_client: httpx.AsyncClient,
) -> None:
    c = app_client
    await ok(await c.post("/collections", json={"name": "dup-a"}), 201)
    await ok(await c.post("/collections", json={"name": "dup-b"}), 201)
    files = [("files", ("same.txt", b"the same bytes in two collections", "text/plain"))]

    first = await ok(await c.post("/upload", files=files, data={"collection": "dup-a"}), 202)
    other = await ok(await c.post("/upload", files=files, data={"collection": "dup-b"}), 202)
    again = await ok(await c.post("/upload", files=files, data={"collection": "dup-a"}), 202)
    assert first["tasks"][0]["status"] == other["tasks"][0]["status"] == "queued"
    assert first["tasks"][0]["document_id"] != other["tasks"][0]["document_id"]
    assert again["tasks"][0]["status"] == "duplicate"
    assert again["tasks"][0]["document_id"] == first["tasks"][0]["document_id"]

    listing = await ok(await c.get("/documents", params={"collection": "dup-b"}))
    assert [d["id"] for d in listing["items"]] == [other["tasks"][0]["document_id"]]
    sha = listing["items"][0]["sha256"]
    digest = {"files": [{"filename": "same.txt", "sha256": sha}]}
    # Still queued (no worker here): found in both, in neither called stored (only a ready document is).
    for name, expected in (("dup-a", "queued"), ("dup-b", "queued"), ("default", None)):
        result = await ok(await c.post("/documents/check-duplicates", json={**digest, "collection": name}))
        assert (result["results"][0]["duplicate"], result["results"][0]["status"]) == (False, expected), name
    # No field: `default`, as before collections existed.
    assert (await ok(await c.post("/documents/check-duplicates", json=digest)))["results"][0][
        "duplicate"
    ] is False
    default_docs = await ok(await c.get("/documents"))
    assert other["tasks"][0]["document_id"] not in [d["id"] for d in default_docs["items"]]


async def test_an_unknown_collection_is_a_404_everywhere(app_client: httpx.AsyncClient) -> None:
    c = app_client
    missing = "no-such-collection"
    digest = {"files": [{"filename": "a.txt", "sha256": "0" * 64}], "collection": missing}
    responses = [
        await c.post(
            "/upload", files=[("files", ("a.txt", b"x", "text/plain"))], data={"collection": missing}
        ),
        await c.get("/documents", params={"collection": missing}),
        await c.post("/documents/check-duplicates", json=digest),
        await c.post("/search", json={"query": "x", "collections": ["default", missing]}),
        await c.post("/query", json={"query": "x", "collections": [missing]}),
        await c.post("/query/stream", json={"query": "x", "collections": [missing]}),
        await c.get(f"/collections/{missing}"),
        await c.patch(f"/collections/{missing}", json={"description": "x"}),
        await c.delete(f"/collections/{missing}"),
        await c.get("/collections/00000000-0000-0000-0000-00000000ffff"),
        await c.get("/collections/Not A Slug"),
    ]
    for response in responses:
        assert response.status_code == 404, (response.request.url, response.text)
        # A stable code beside the sentence: the web app tells a collection gone (renamed or deleted
        # elsewhere) from any other 404 by it, not by the start of an English sentence.
        assert response.json()["code"] == "collection_not_found", (response.request.url, response.text)
    assert missing in responses[3].json()["detail"]
    # Any other 404 carries no code (a chat, a document that is not there).
    other = await c.get("/documents/00000000-0000-0000-0000-00000000ffff")
    assert other.status_code == 404 and "code" not in other.json(), other.text
    # /v1 keeps OpenAI's shape: there the collection is the model, and its code says so.
    v1 = await c.post(
        "/v1/chat/completions",
        json={"model": f"rag:{missing}", "messages": [{"role": "user", "content": "x"}]},
    )
    assert v1.status_code == 404 and v1.json()["error"]["code"] == "model_not_found", v1.text
    assert "detail" not in v1.json()
    schema = (await c.get("/openapi.json")).json()["components"]["schemas"]["ErrorResponse"]
    assert schema["required"] == ["detail"] and "collection_not_found" in str(schema["properties"]["code"])


async def _queue_rows(conn: asyncpg.Connection, queue: str, msg_ids: list[int]) -> int:
    count: int = await conn.fetchval(
        f"SELECT count(*) FROM pgmq.q_{queue} WHERE msg_id = ANY($1::bigint[])", msg_ids
    )
    return count


async def _contents(
    conn: asyncpg.Connection, collection_id: UUID, queue: str, msg_ids: list[int]
) -> dict[str, int]:
    return {
        "documents": await conn.fetchval(
            "SELECT count(*) FROM documents WHERE collection_id = $1", collection_id
        ),
        "chunks": await conn.fetchval("SELECT count(*) FROM chunks WHERE collection_id = $1", collection_id),
        "batches": await conn.fetchval(
            "SELECT count(*) FROM job_batches WHERE collection_id = $1", collection_id
        ),
        "tasks": await conn.fetchval(
            "SELECT count(*) FROM job_tasks t JOIN job_batches b ON b.id = t.batch_id"
            " WHERE b.collection_id = $1",
            collection_id,
        ),
        "messages": await _queue_rows(conn, queue, msg_ids),
        "collection": await conn.fetchval("SELECT count(*) FROM collections WHERE id = $1", collection_id),
    }


async def test_force_delete_removes_documents_chunks_tasks_and_messages_in_one_transaction(
    runtime: Runtime,
) -> None:
    doomed = await store.create_collection(runtime.pool, CreateCollection(name="doomed"))
    keep = await store.create_collection(runtime.pool, CreateCollection(name="keep"))
    await ingest_documents_direct(
        runtime, [DirectDocument("ready.txt", b"A ready document about herons.", {})], collection_id=doomed.id
    )
    files = [incoming_file(f"queued-{i}.txt", f"queued file {i}".encode()) for i in range(3)]
    batch = await create_upload_batch(runtime.pool, runtime.queue, files, doomed.id)
    kept = await create_upload_batch(runtime.pool, runtime.queue, files[:1], keep.id)
    queue = runtime.settings.queue_name
    async with runtime.pool.acquire() as conn:
        msg_ids = [
            r["msg_id"]
            for r in await conn.fetch("SELECT msg_id FROM job_tasks WHERE batch_id = $1", batch.batch_id)
        ]
        kept_msgs = [await conn.fetchval("SELECT msg_id FROM job_tasks WHERE batch_id = $1", kept.batch_id)]
        before = await _contents(conn, doomed.id, queue, msg_ids)
        assert before == {
            "documents": 4,
            "chunks": 1,
            "batches": 1,
            "tasks": 3,
            "messages": 3,
            "collection": 1,
        }

        with pytest.raises(Exception, match="holds 4 documents; delete with force=true"):
            await store.delete_collection(conn, runtime.queue, "doomed")

        # Inside a caller's transaction that then rolls back, nothing is gone: every write (the queue's
        # too) went through that one transaction.
        class Rollback(Exception):
            pass

        with pytest.raises(Rollback):
            async with conn.transaction():
                await store.delete_collection(conn, runtime.queue, "doomed", force=True)
                assert (await _contents(conn, doomed.id, queue, msg_ids))["messages"] == 0
                raise Rollback
        assert await _contents(conn, doomed.id, queue, msg_ids) == before

        await store.delete_collection(conn, runtime.queue, str(doomed.id), force=True)
        assert set((await _contents(conn, doomed.id, queue, msg_ids)).values()) == {0}
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM document_files f LEFT JOIN documents d "
                "ON d.id = f.document_id WHERE d.id IS NULL"
            )
            == 0
        )
        assert await _queue_rows(conn, queue, kept_msgs) == 1  # another collection's message stays
        assert (await _contents(conn, keep.id, queue, kept_msgs))["documents"] == 1


async def test_chunks_carry_their_documents_collection(runtime: Runtime, scoped: dict[str, Any]) -> None:
    mismatched = await runtime.pool.fetchval(
        "SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id"
        " WHERE c.collection_id <> d.collection_id"
    )
    assert mismatched == 0
    doc_id = next(iter(scoped["small_ids"]))
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await runtime.pool.execute(
            "UPDATE chunks SET collection_id = $2 WHERE document_id = $1", doc_id, DEFAULT_COLLECTION_ID
        )


async def test_the_scoped_hnsw_scan_keeps_going_until_the_collection_fills_top_k(
    runtime: Runtime, scoped: dict[str, Any]
) -> None:
    """On a table this small the planner prefers the collection index (exact); on a large one it takes
    the HNSW index, whose scan of ef_search rows would hold only decoys. Force that plan here."""
    embedding = await embed_query(runtime, QUERY)
    small = scoped["small"]
    async with owner_connection(runtime.database_url) as conn:  # the owner may drop an index
        statements: list[str] = []
        conn.add_query_logger(lambda q: statements.append(f"{q.query} {q.args}"))
        tr = conn.transaction()
        await tr.start()
        try:
            await conn.execute("DROP INDEX chunks_collection_idx; SET LOCAL enable_seqscan = off")
            plan = "\n".join(
                r[0]
                for r in await conn.fetch(
                    f"EXPLAIN {vector_sql(None, [small.id])[0]}", embedding, 5, [small.id]
                )
            )
            assert "chunks_embedding_hnsw_idx" in plan
            hits = await vector_leg(conn, embedding, 5, None, ef_search=5, collections=[small.id])
        finally:
            await tr.rollback()
    assert any("iterative_scan" in s for s in statements)
    assert len(hits) == 5
    assert set(await _chunk_collections(runtime, [h.chunk_id for h in hits])) == {small.id}


async def test_existing_data_migrates_into_default_and_stays_searchable(
    pg_server: str, runtime: Runtime, tmp_path: Path
) -> None:
    url = await create_database(pg_server, "mig")
    settings = Settings(database_url=url, data_dir=tmp_path)
    await asyncio.to_thread(command.upgrade, alembic_config(url, settings), "0002_bm25")
    text = "Zebrafish regenerate cardiac muscle after injury."
    embedding = (await runtime.embedder.embed([text]))[0]
    conn = await asyncpg.connect(url)
    try:
        doc_id = await conn.fetchval(
            "INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, status,"
            " chunk_count) VALUES ('old.txt', 'txt', 'text/plain', 1, $1, 'ready', 1) RETURNING id",
            "a" * 64,
        )
        await conn.execute(
            "INSERT INTO chunks (document_id, chunk_index, text, search_text, embedding)"
            " VALUES ($1, 0, $2, $2, $3::vector)",
            doc_id,
            text,
            vector_literal(embedding),
        )
    finally:
        await conn.close()

    async with open_runtime(settings, migrate=True, embedder=runtime.embedder) as migrated:
        row = await migrated.pool.fetchrow(
            "SELECT d.collection_id, c.collection_id AS chunk_collection FROM documents d"
            " JOIN chunks c ON c.document_id = d.id WHERE d.id = $1",
            doc_id,
        )
        assert row["collection_id"] == row["chunk_collection"] == DEFAULT_COLLECTION_ID
        # The new columns were analyzed (without statistics the planner skips the HNSW index). As the
        # owner: pg_stats hides the statistics of tables under row-level security from other roles.
        async with owner_connection(url) as owner:
            analyzed = await owner.fetch(
                "SELECT tablename FROM pg_stats WHERE attname = 'collection_id'"
                " AND tablename IN ('chunks', 'documents')"
            )
        assert sorted(r["tablename"] for r in analyzed) == ["chunks", "documents"]
        # The existing postings moved into `default` with their chunk; one bm25_index_add is left.
        posted = await migrated.pool.fetch("SELECT DISTINCT collection_id FROM bm25_postings")
        assert [r["collection_id"] for r in posted] == [DEFAULT_COLLECTION_ID]
        assert await _index_add_signatures(migrated.pool) == ["bigint[], text[], uuid[]"]
        default = await store.get_collection(migrated.pool, "default")
        assert default.document_count == 1
        for mode in ("vector", "bm25", "hybrid"):
            result = await search(migrated, SearchRequest(query="zebrafish cardiac injury", search_type=mode))
            assert [h.document_id for h in result.results] == [doc_id], mode
        # The same bytes may now be stored again, in another collection only.
        other = await store.create_collection(migrated.pool, CreateCollection(name="other"))
        again = incoming_file("old.txt", b"x")
        assert (
            await insert_new_document(migrated.pool, again, "a" * 64, "queued", DEFAULT_COLLECTION_ID) is None
        )
        assert await insert_new_document(migrated.pool, again, "a" * 64, "queued", other.id) is not None

    # Downgrading restores 0002's index maintenance: postings without a collection, the 2-array function.
    await asyncio.to_thread(command.downgrade, alembic_config(url, settings), "0002_bm25")
    conn = await asyncpg.connect(url)
    try:
        assert await _index_add_signatures(conn) == ["bigint[], text[]"]
        await conn.execute(
            "INSERT INTO chunks (document_id, chunk_index, text, search_text, embedding)"
            " VALUES ($1, 1, 'zebrafish again', 'zebrafish again', $2::vector)",
            doc_id,
            vector_literal(embedding),
        )
        assert await conn.fetchval("SELECT df FROM bm25_terms WHERE term = 'zebrafish'") == 2
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM information_schema.columns"
                " WHERE table_name = 'bm25_postings' AND column_name = 'collection_id'"
            )
            == 0
        )
    finally:
        await conn.close()


async def _index_add_signatures(conn: asyncpg.Pool | asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT oidvectortypes(proargtypes) AS args FROM pg_proc WHERE proname = 'bm25_index_add'"
    )
    return [r["args"] for r in rows]


def test_cli_collections_ingest_and_search_take_a_collection(
    live_app_url: str, scoped: dict[str, Any], database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    env = process_env(database_url, data_dir)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rag_server", *args], env=env, capture_output=True, text=True, timeout=180
        )

    created = cli(
        "collections", "create", "cli-docs", "--description", "from the CLI", "--hybrid-alpha", "0.3"
    )
    assert created.returncode == 0, created.stderr
    refused_alpha = cli("collections", "create", "cli-other", "--hybrid-alpha", "1.5")
    assert refused_alpha.returncode == 1 and refused_alpha.stderr.startswith("error: --hybrid-alpha 1.5:")
    again = cli("collections", "create", "cli-docs")
    assert again.returncode == 1 and "already exists" in again.stderr and again.stdout == ""
    for bad, rule in (
        ("Bad_Name", "lower-case letters, digits, '-' and '_', starting with a letter or digit; up to 63"),
        ("00000000-0000-0000-0000-000000000009", "a collection name must not have the form of a UUID"),
    ):
        refused_name = cli("collections", "create", bad)
        # pydantic's ValidationError was printed whole: several lines and a link to its site.
        assert refused_name.returncode == 1 and refused_name.stdout == ""
        assert refused_name.stderr.splitlines() == [f"error: collection name {bad!r}: {rule}"]

    (tmp_path / "note.txt").write_text("Herons hunt fish in shallow water at dawn.")
    ingested = cli(
        "ingest", str(tmp_path / "note.txt"), "--url", live_app_url, "--no-wait", "--collection", "cli-docs"
    )
    assert ingested.returncode == 0, ingested.stderr
    listed = cli("collections", "list")
    row = next(line for line in listed.stdout.splitlines() if line.startswith("cli-docs "))
    assert row.split()[1:3] == ["1", "0.3"] and row.endswith("from the CLI")

    scoped_search = cli("search", "zebrafish heart regeneration", "--type", "bm25", "--collection", "small")
    assert scoped_search.returncode == 0, scoped_search.stderr
    names = [line.split()[4] for line in scoped_search.stdout.splitlines()[1:-1]]
    assert len(names) == len(SMALL_TEXTS) and all(n.startswith("small-") for n in names)
    small_only = cli("search", "zebrafish heart regeneration", "--url", live_app_url, "--collection", "small")
    assert small_only.returncode == 0, small_only.stderr
    assert all(line.split()[4].startswith("small-") for line in small_only.stdout.splitlines()[1:-1])
    out_of_range = cli("search", "zebrafish", "--top-k", "0", "--alpha", "2")  # pydantic's lines, whole
    assert out_of_range.returncode == 2 and out_of_range.stderr.splitlines() == [
        "error: --top-k 0: input should be greater than or equal to 1;"
        " --alpha 2.0: input should be less than or equal to 1"
    ]
    unknown = cli("search", "zebrafish", "--type", "bm25", "--collection", "nope")
    assert unknown.returncode == 2 and "no collection 'nope'" in unknown.stderr and unknown.stdout == ""

    refused = cli("collections", "delete", "cli-docs")
    # The CLI names its flag, not the API's parameter (force=true); the migrations log on stderr too.
    assert refused.returncode == 1 and refused.stderr.splitlines()[-1] == (
        "error: the collection 'cli-docs' holds 1 documents; delete with --force"
    )
    assert cli("collections", "delete", "cli-docs", "--force").returncode == 0
    assert "cli-docs " not in cli("collections", "list").stdout
