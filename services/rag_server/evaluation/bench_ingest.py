"""`rag-server bench ingest`: a BEIR corpus through the real API and worker processes.

Each document is written out as one .txt file (title, blank line, text), uploaded with POST /upload
(at most RAG_MAX_FILES_PER_UPLOAD files per request) to a `rag-server serve` subprocess on a fresh,
throwaway database, and processed by N `rag-server worker` subprocesses. The clock runs from the
first upload until every batch reports done; workers have loaded the model before it starts.

The ceiling: after each run, the same chunk texts (read back from the database; an evenly spaced
sample of at most RAW_SAMPLE) are embedded directly in this process with the same model and batch
size; the best of these measurements is the ceiling and pipeline chunks/s divided by it the ratio.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rag_server.config import Settings
from rag_server.evaluation.beir import BeirDocument, load_beir
from rag_server.evaluation.bench_report import machine_load
from rag_server.evaluation.processes import Child, child_env, start_server, start_worker
from rag_server.evaluation.progress import progress_bar
from rag_server.evaluation.report import write_json
from rag_server.infra import admin
from rag_server.infra.database import resolve_database_url

# The ceiling is measured on an evenly spaced sample of at most this many of the run's chunk texts.
RAW_SAMPLE = 1_500


@dataclass
class BenchIngestOptions:
    dataset: Path
    workers: Sequence[int] = (1,)
    limit: int | None = None
    json_path: Path | None = None


def write_files(documents: Sequence[BeirDocument], folder: Path) -> list[Path]:
    paths = []
    for doc in documents:
        path = folder / f"{doc.doc_id}.txt"
        path.write_text(f"{doc.title}\n\n{doc.text}", encoding="utf-8")
        paths.append(path)
    return paths


async def _chunk_stats(url: str) -> tuple[int, int, list[str]]:
    async with admin.connection(url) as conn:
        failed = await conn.fetchval("SELECT count(*) FROM documents WHERE status <> 'ready'")
        texts = [r[0] for r in await conn.fetch("SELECT search_text FROM chunks ORDER BY id")]
    return len(texts), int(failed), texts


def _wait_ready(workers: Sequence[Child], timeout_s: float = 180) -> None:
    """Until every worker logged 'worker ready' (model loaded, polling the queue)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for w in workers:
            if w.popen.poll() is not None:
                raise RuntimeError(f"worker exited with {w.popen.returncode}:\n{w.log_tail()}")
        if all("worker ready" in w.log_path.read_text(errors="replace") for w in workers):
            return
        time.sleep(0.25)
    raise TimeoutError("workers not ready in time:\n" + "\n".join(w.log_tail(800) for w in workers))


def upload_and_wait(base_url: str, paths: Sequence[Path], per_upload: int) -> list[dict[str, Any]]:
    """POST every file (in groups), then poll each batch until done; returns the final statuses."""
    batch_ids: list[str] = []
    with httpx.Client(base_url=base_url, timeout=300) as client:
        for start in range(0, len(paths), per_upload):
            group = paths[start : start + per_upload]
            files = [("files", (p.name, p.read_bytes(), "text/plain")) for p in group]
            response = client.post("/upload", files=files)
            if response.status_code != 202:
                raise RuntimeError(f"upload failed: HTTP {response.status_code} {response.text[:300]}")
            batch_ids.append(response.json()["batch_id"])
        statuses: dict[str, dict[str, Any]] = {}
        with progress_bar("ingesting (API)", len(paths)) as bar:
            while len(statuses) < len(batch_ids):
                pending_done = 0
                for batch_id in batch_ids:
                    if batch_id in statuses:
                        continue
                    status = client.get(f"/tasks/{batch_id}/status").json()
                    if status["done"]:
                        statuses[batch_id] = status
                    else:
                        counts = status["counts"]
                        pending_done += counts["completed"] + counts["failed"] + counts["duplicate"]
                done = pending_done + sum(s["total"] for s in statuses.values())
                bar.update(done - bar.n)
                if len(statuses) < len(batch_ids):
                    time.sleep(0.5)
    return list(statuses.values())


def one_run(
    settings: Settings, server_url: str, paths: Sequence[Path], workers: int, tmp: Path
) -> tuple[dict[str, Any], list[str]]:
    name = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    url = asyncio.run(admin.create_database(server_url, name))
    # Each worker process runs the configured concurrency (its default: 2 slots), like `rag-server worker`.
    env = child_env(url, settings.data_dir, RAG_WORKER_CONCURRENCY=str(settings.worker_concurrency))
    children: list[Child] = []
    try:
        server = start_server(env, tmp / f"server-{workers}.log")
        children.append(server)
        worker_procs = [start_worker(env, tmp / f"worker-{workers}-{n}.log") for n in range(workers)]
        children += worker_procs
        _wait_ready(worker_procs)
        assert server.base_url is not None
        started = time.perf_counter()
        statuses = upload_and_wait(server.base_url, paths, settings.max_files_per_upload)
        wall = time.perf_counter() - started
        for child in children:
            child.stop()
        chunks, failed, texts = asyncio.run(_chunk_stats(url))
    finally:
        for child in children:
            child.stop()
        asyncio.run(admin.drop_database(server_url, name))
    run = {
        "workers": workers,
        "concurrency": settings.worker_concurrency,
        "documents": len(paths),
        "chunks": chunks,
        "failed": failed,
        "batches": len(statuses),
        "wall_s": round(wall, 2),
        "docs_per_s": round(len(paths) / wall, 2),
        "chunks_per_s": round(chunks / wall, 2),
    }
    return run, texts


def raw_embedding(settings: Settings, texts: list[str]) -> dict[str, Any]:
    """The ceiling: the same texts through the same model in one process, no database, no queue."""
    from rag_server.infra.embeddings import build_embedder

    embedder = build_embedder(settings)

    async def embed_all() -> float:
        await embedder.embed(texts[:32])  # warm-up (first call initialises kernels)
        started = time.perf_counter()
        for start in range(0, len(texts), settings.embedding_batch_size):
            await embedder.embed(texts[start : start + settings.embedding_batch_size])
        elapsed = time.perf_counter() - started
        await embedder.aclose()
        return elapsed

    seconds = asyncio.run(embed_all())
    return {
        "chunks": len(texts),
        "seconds": round(seconds, 2),
        "batch_size": settings.embedding_batch_size,
        "chunks_per_s": round(len(texts) / seconds, 2),
    }


def run_bench_ingest(settings: Settings, options: BenchIngestOptions) -> dict[str, Any]:
    load = machine_load()
    dataset = load_beir(options.dataset)
    documents = list(dataset.corpus.values())[: options.limit]
    server_url = resolve_database_url(settings)
    runs: list[dict[str, Any]] = []
    texts: list[str] = []
    raws: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "files").mkdir()
        paths = write_files(documents, tmp / "files")
        for workers in options.workers:
            print(f"bench ingest: {len(paths)} files, {workers} worker(s)", file=sys.stderr, flush=True)
            run, run_texts = one_run(settings, server_url, paths, workers, tmp)
            runs.append(run)
            texts = texts or run_texts
            # Measured after every run, the best one is the ceiling: on a shared machine a single
            # measurement can land in a busy moment and flatter the pipeline.
            sample = texts[:: max(1, len(texts) // RAW_SAMPLE)][:RAW_SAMPLE]
            print(
                f"raw embedding ceiling: {len(sample)} of {len(texts)} chunk texts",
                file=sys.stderr,
                flush=True,
            )
            raws.append(raw_embedding(settings, sample))
    raw = max(raws, key=lambda r: float(r["chunks_per_s"]))
    raw["measurements_chunks_per_s"] = [r["chunks_per_s"] for r in raws]
    for run in runs:
        run["ratio_to_raw"] = round(run["chunks_per_s"] / raw["chunks_per_s"], 3)
    result = {
        **load,
        "dataset": dataset.name,
        "documents": len(documents),
        "embedding_model": settings.embedding_model,
        "embedding_batch_size": settings.embedding_batch_size,
        "embedding_precision": settings.embedding_precision,
        "target_ratio": 0.95,
        "raw": raw,
        "runs": runs,
    }
    write_json(options.json_path, result)
    return result
