"""The peers' runs inside `rag-server eval --peers` (evaluation.peers has the peers themselves)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from rag_server.evaluation.beir import BeirDataset
from rag_server.evaluation.metrics import evaluate, latency_summary
from rag_server.evaluation.progress import progress_bar
from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime


async def run_peers(
    runtime: Runtime,
    dataset: BeirDataset,
    queries: Sequence[tuple[str, str]],
    qrels: dict[str, dict[str, int]],
    chunks: int,
    top_k: int,
    quiet: bool,
) -> dict[str, dict[str, Any]]:
    from rag_server.evaluation import peers

    results: dict[str, dict[str, Any]] = {}

    # bm25s: index build is not timed (it happens once); each query is.
    bm25 = await asyncio.to_thread(peers.Bm25sPeer, list(dataset.corpus.values()))
    run: dict[str, list[str]] = {}
    latencies: list[float] = []
    with progress_bar("querying peer bm25s", len(queries), quiet) as bar:
        for qid, text in queries:
            run[qid], ms = bm25.search(text, top_k)
            latencies.append(ms)
            bar.update()
    results[bm25.name] = {**evaluate(run, qrels), "latency_ms": latency_summary(latencies)}

    li = peers.LlamaIndexHybridPeer(
        runtime.database_url, runtime.settings.embedding_dim, runtime.settings.hnsw_ef_search
    )
    try:
        # As the owner: the peer's tables are LlamaIndex's, created outside our migrations.
        async with owner_connection(runtime.database_url) as conn:
            ready = await peers.llamaindex_ready(conn, chunks)
            if not ready:
                await peers.reset_llamaindex(conn)
                rows = await peers.read_chunks_for_peer(conn)
        if not ready:
            with progress_bar("filling peer llamaindex", len(rows), quiet) as bar:
                await asyncio.to_thread(li.fill, rows, bar.update)
            async with owner_connection(runtime.database_url) as conn:
                await peers.mark_llamaindex_ready(conn, chunks)
        embedder = runtime.embedder
        run, latencies = {}, []
        await asyncio.to_thread(li.search, queries[0][1], await embedder.embed_query(queries[0][1]), top_k)
        with progress_bar("querying peer llamaindex", len(queries), quiet) as bar:
            for qid, text in queries:
                started = time.perf_counter()
                vector = await embedder.embed_query(text)
                run[qid] = await asyncio.to_thread(li.search, text, vector, top_k)
                latencies.append((time.perf_counter() - started) * 1000)
                bar.update()
        results[li.name] = {**evaluate(run, qrels), "latency_ms": latency_summary(latencies)}
    finally:
        li.close()
    return results
