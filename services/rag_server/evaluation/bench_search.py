"""`rag-server bench search`: latency of the real HTTP /search under 1, 8 and 32 concurrent clients.

Without --url it builds (once) a bench database with --scale synthetic chunks (see synthetic.py),
starts `rag-server serve` on it as a subprocess and drives that. Queries are real BEIR queries,
cycled. Reported per mode and concurrency: client-side p50/p95/p99 latency, QPS, and the median of
each server-side stage from the response's `timings_ms`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np

from rag_server.config import Settings
from rag_server.evaluation import bench_build, synthetic
from rag_server.evaluation.beir import BeirDataset, load_beir
from rag_server.evaluation.bench_report import machine_load
from rag_server.evaluation.metrics import percentiles
from rag_server.evaluation.processes import child_env, start_server
from rag_server.evaluation.progress import progress_bar
from rag_server.evaluation.report import write_json
from rag_server.infra import admin
from rag_server.infra.database import owner_connection, resolve_database_url, with_database
from rag_server.infra.embeddings import Embedder
from rag_server.infra.file_lock import file_lock
from rag_server.infra.migrations import upgrade_to_head
from rag_server.retrieval import bm25_packs

BENCH_KEY_NAME = "bench-search"
POOL_SIZE = 1_000  # real passages embedded with the real model; the rest is mixed from them
SYNTHESIS_BLOCK = 50_000  # rows synthesized and loaded at a time: the build's memory is bounded


@dataclass
class BenchSearchOptions:
    dataset: Path
    url: str | None = None
    scale: int = 20_000
    clients: Sequence[int] = (1, 8, 32)
    requests: int = 300
    top_k: int = 10
    modes: Sequence[str] = ("hybrid", "bm25", "vector")
    json_path: Path | None = None
    # Sent to --url; without --url the bench creates a reader key on its own database and sends that,
    # so the timings include authentication and the key's row-level security scope.
    api_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Held (flock) from starting the server to the last timed request: measurements sharing a
    # machine take turns. None: no lock.
    lock: Path | None = None
    build_only: bool = False  # build (or reuse) the bench database, record its build and sizes; no timing


def bench_database_name(settings: Settings, dataset: Path, scale: int) -> str:
    key = json.dumps(
        [str(dataset.resolve()), scale, POOL_SIZE, settings.embedding_model, settings.embedding_dim, 1]
    )
    return f"bench_search_{scale}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"


async def pool_embeddings(embedder: Embedder, pool: list[str], settings: Settings) -> np.ndarray:
    """The pool's vectors, embedded once per pool and model and kept under data_dir/bench: every scale
    mixes the same pool, and embedding it costs minutes on a busy machine (a 10k build: 190 of 218 s)."""
    key = json.dumps([pool, settings.embedding_model, settings.embedding_dim])
    path = settings.data_dir / "bench" / f"pool-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    print(f"embedding {len(pool)} real passages for the synthetic pool", file=sys.stderr)
    vectors = np.asarray(await embedder.embed(pool), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    np.save(partial, vectors)
    partial.replace(path)  # complete or absent, never half a file
    return vectors


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


async def pack_bench_database(conn: asyncpg.Connection, settings: Settings) -> float | None:
    """What a worker would do next: the native engine's pack, when due. The seconds it took, or None."""
    if await admin.get_meta(conn, "bm25_engine") != "native":
        return None
    packed = await bm25_packs.pack_if_due(conn, settings)
    if packed is None:
        return None
    _log(f"BM25 pack: {packed.describe()}")
    return packed.seconds


async def prepare_bench_database(settings: Settings, dataset: BeirDataset, scale: int) -> tuple[str, float]:
    """URL of a database holding `scale` synthetic chunks (built now or reused); seconds spent building."""
    from rag_server.infra.runtime import open_runtime

    server_url = await asyncio.to_thread(resolve_database_url, settings)
    name = bench_database_name(settings, dataset.root, scale)
    url = with_database(server_url, name)

    async def loaded(conn: asyncpg.Connection) -> bool:
        # A partial load (no marker, or another scale) is rebuilt.
        return await admin.has_app_meta(conn) and await synthetic.synthetic_count(conn) == scale

    if await admin.reuse_or_recreate(server_url, name, loaded):
        print(f"bench database {name}: {scale} synthetic chunks (reused)", file=sys.stderr)
        # Built by an older version: the schema first (the server would migrate it too, after the pack).
        await asyncio.to_thread(upgrade_to_head, url, settings)
        async with owner_connection(url) as conn:
            await pack_bench_database(conn, settings)
        return url, 0.0

    started = time.perf_counter()
    bench_settings = settings.model_copy(update={"database_url": url})
    async with open_runtime(bench_settings, migrate=True, load_embedder="documents") as runtime:
        pool = synthetic.passage_pool(list(dataset.corpus.values()), POOL_SIZE)
        pool_vectors = await pool_embeddings(runtime.embedder, pool, settings)
        blocks = synthetic.synthesize_blocks(pool, pool_vectors, scale, SYNTHESIS_BLOCK)
        # As the owner: VACUUM, dropping and creating indexes are the owner's, and a bulk load needs
        # no per-row policy checks.
        async with owner_connection(runtime.database_url) as conn:
            with progress_bar("loading synthetic", scale) as bar:
                build = await bench_build.bulk_load(conn, blocks, bar.update, _log)
            # VACUUM too: sets the visibility map and keeps autovacuum from running during the timing.
            vacuum_started = time.perf_counter()
            await conn.execute("VACUUM ANALYZE")
            build["vacuum_s"] = round(time.perf_counter() - vacuum_started, 1)
            pack_s = await pack_bench_database(conn, settings)
            if pack_s is not None:
                build["bm25_pack_s"] = round(pack_s, 1)
            build["total_s"] = round(time.perf_counter() - started, 1)
            await synthetic.mark_loaded(conn, scale, len(pool), build)
    return url, time.perf_counter() - started


async def drive(
    base_url: str,
    queries: Sequence[str],
    mode: str,
    clients: int,
    requests: int,
    top_k: int,
    headers: dict[str, str],
) -> dict[str, Any]:
    """`requests` searches spread over `clients` concurrent connections; client-side latencies.

    Each client first sends one untimed search and the clock starts when all have: opening the HTTP
    connections and growing the server's database pool to this concurrency are not part of a steady
    state (with 150 requests at 8 clients they cost ~12% of the QPS at 100k)."""
    latencies: list[float] = []
    stages: dict[str, list[float]] = {}
    errors = 0
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    ready = asyncio.Barrier(clients)
    wall_start = 0.0

    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits, headers=headers) as client:

        async def one_client(index: int) -> None:
            nonlocal errors, wall_start
            warm_up = {"query": queries[index % len(queries)], "top_k": top_k, "search_type": mode}
            try:
                (await client.post("/search", json=warm_up)).raise_for_status()
            except BaseException:
                await ready.abort()  # the other clients stop waiting (BrokenBarrierError)
                raise
            if await ready.wait() == 0:
                wall_start = time.perf_counter()
            for n in counter:  # shared iterator: each request number is taken exactly once
                body = {"query": queries[n % len(queries)], "top_k": top_k, "search_type": mode}
                started = time.perf_counter()
                response = await client.post("/search", json=body)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    errors += 1
                    continue
                latencies.append(elapsed)
                for stage, ms in response.json().get("timings_ms", {}).items():
                    stages.setdefault(stage, []).append(float(ms))

        await asyncio.gather(*(one_client(i) for i in range(clients)))
        wall = time.perf_counter() - wall_start
    return {
        "clients": clients,
        "requests": requests,
        "errors": errors,
        "latency_ms": percentiles(latencies),
        "qps": round(len(latencies) / wall, 1) if wall > 0 else 0.0,
        "server_stages_ms_p50": {k: round(float(np.median(v)), 2) for k, v in sorted(stages.items())},
    }


async def bench_key(settings: Settings, url: str) -> str:
    """A fresh reader key on the bench database (the previous bench key is revoked)."""
    from rag_server.access.keys import create_key, revoke_key
    from rag_server.access.models import CreateKey
    from rag_server.errors import NotFoundError
    from rag_server.infra.runtime import open_runtime

    async with open_runtime(settings.model_copy(update={"database_url": url}), migrate=True) as runtime:
        with contextlib.suppress(NotFoundError):
            await revoke_key(runtime.pool, BENCH_KEY_NAME)
        return (await create_key(runtime.pool, CreateKey(name=BENCH_KEY_NAME, role="reader"))).key


@contextlib.asynccontextmanager
async def held(lock: Path | None) -> AsyncIterator[None]:
    """`lock` held exclusively (flock, like `flock FILE cmd`) for the block; nothing when None."""
    if lock is None:
        yield
        return
    print(f"waiting for {lock}", file=sys.stderr, flush=True)
    with contextlib.ExitStack() as stack:
        await asyncio.to_thread(stack.enter_context, file_lock(lock))  # the wait, off the event loop
        yield


async def measure(
    base_url: str, queries: Sequence[str], options: BenchSearchOptions, headers: dict[str, str]
) -> dict[str, list[dict[str, Any]]]:
    """The warm-up pass, then every mode at every concurrency level: the result's `runs`."""
    # Steady state, not a cold start: one hybrid pass over every query loads the model, fills the
    # pools and brings the pages these queries touch into shared buffers (20 warm-up requests left
    # the first timed row reading postings from the OS cache: p50 28.6 vs 17.9 ms at 100k).
    print(f"  warm-up: one hybrid pass over {len(queries)} queries", file=sys.stderr, flush=True)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, headers=headers) as client:
        for query in queries:
            body = {"query": query, "top_k": options.top_k, "search_type": "hybrid"}
            (await client.post("/search", json=body)).raise_for_status()
    runs: dict[str, list[dict[str, Any]]] = {}
    for mode in options.modes:
        runs[mode] = []
        for clients in options.clients:
            print(f"  {mode:<7} clients={clients:<3} ...", file=sys.stderr, flush=True)
            runs[mode].append(
                await drive(base_url, queries, mode, clients, options.requests, options.top_k, headers)
            )
    return runs


async def _on_bench_database(
    settings: Settings, options: BenchSearchOptions, dataset: BeirDataset, queries: list[str]
) -> dict[str, Any]:
    """Build or reuse the bench database, then (unless build_only) time a server started on it."""
    url, build_s = await prepare_bench_database(settings, dataset, options.scale)
    result: dict[str, Any] = {"build_s": round(build_s, 1)}
    async with admin.connection(url) as conn:
        result["chunks"] = await conn.fetchval("SELECT count(*) FROM chunks")
        result["build"] = await synthetic.build_info(conn)
        result["sizes_bytes"] = await bench_build.relation_sizes(conn)
    if options.build_only:
        return result
    headers = {"Authorization": f"Bearer {await bench_key(settings, url)}"}
    result["auth"] = "api_key (reader, every collection)"
    async with held(options.lock):
        result.update(machine_load())  # the load when the timed part starts
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            env = child_env(url, settings.data_dir)
            server = await asyncio.to_thread(start_server, env, Path(tmp) / "server.log")
            try:
                assert server.base_url is not None
                before = await block_counts(url)
                result["runs"] = await measure(server.base_url, queries, options, headers)
                result["buffers"] = buffer_use(before, await block_counts(url))
            finally:
                await asyncio.to_thread(server.stop)
    return result


async def block_counts(url: str) -> tuple[int, int]:
    """(blocks found in shared buffers, blocks read from the OS) so far in the database at `url`."""
    async with admin.connection(url) as conn:
        # Backends flush their statistics about once a second: wait for the last requests' counts.
        await asyncio.sleep(1.5)
        row = await conn.fetchrow(
            "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(row["blks_hit"]), int(row["blks_read"])


def buffer_use(before: tuple[int, int], after: tuple[int, int]) -> dict[str, float]:
    """Shared-buffer hits and reads during the timed part (warm-up included) and the hit rate."""
    hit, read = after[0] - before[0], after[1] - before[1]
    return {"blocks_hit": hit, "blocks_read": read, "hit_rate": round(hit / max(hit + read, 1), 4)}


async def run_bench_search(settings: Settings, options: BenchSearchOptions) -> dict[str, Any]:
    dataset = await asyncio.to_thread(load_beir, options.dataset)
    queries = [dataset.queries[q] for q in dataset.test_query_ids()] or list(dataset.queries.values())
    result: dict[str, Any] = {
        **machine_load(),
        "url": options.url,
        "scale": None if options.url else options.scale,
        "top_k": options.top_k,
        "requests": options.requests,
        "queries": len(queries),
        "runs": {},
    }
    if options.url:
        headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        async with held(options.lock):
            result.update(machine_load())
            result["runs"] = await measure(options.url.rstrip("/"), queries, options, headers)
    else:
        # The server started here runs with these settings (a server at --url: unknown).
        result["embedding_precision"] = settings.embedding_precision
        result["query_embedding_precision"] = settings.query_precision
        result.update(await _on_bench_database(settings, options, dataset, queries))
    write_json(options.json_path, result)
    return result
