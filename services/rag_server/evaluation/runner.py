"""`rag-server eval`: ingest a BEIR corpus into an isolated database, score every mode and the peers.

The eval database lives on the configured server (DATABASE_URL or the embedded one) but is never the
user's database: its name is a hash of the dataset contents and every setting that changes the
stored chunks, so a second run with the same inputs reuses it and skips the embedding.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import asyncpg

from rag_server.collections.store import get_collection
from rag_server.config import Settings
from rag_server.evaluation import report
from rag_server.evaluation.beir import BeirDataset, BeirDocument, corpus_fingerprint, load_beir
from rag_server.evaluation.metrics import evaluate, fold_to_documents, latency_summary
from rag_server.evaluation.progress import progress_bar
from rag_server.evaluation.tuning import split_queries, tune_alpha
from rag_server.infra import admin
from rag_server.infra.database import resolve_database_url, with_database
from rag_server.infra.runtime import Runtime, open_runtime
from rag_server.retrieval.models import GroupBy, SearchType
from rag_server.retrieval.service import bm25_engine

if TYPE_CHECKING:
    from rag_server.ingestion.pipeline import DirectDocument

MODES: tuple[SearchType, ...] = ("bm25", "vector", "hybrid")
INGEST_MARKER = "eval_ingest"  # app_meta key, written only after the last document is stored
INGEST_BATCH = 256  # documents per ingest call: the progress bar moves after each call
# Bump when the way the corpus is turned into documents changes, so old eval databases are not reused.
EVAL_FORMAT = 1


@dataclass
class EvalOptions:
    dataset: Path
    modes: Sequence[SearchType] = MODES
    top_k: int = 100
    max_queries: int | None = None
    peers: bool = False
    fresh: bool = False
    json_path: Path | None = None
    report_path: Path | None = None
    quiet: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # The collection the corpus is ingested into and searched in; None: named after the dataset folder.
    collection: str | None = None
    # "chunk" (/search's default): chunk hits fused, then folded here (the best chunk wins); "document":
    # /search's group_by=document (each leg folded to documents, then fused).
    group_by: GroupBy = "chunk"
    tune: bool = False  # --tune: choose the collection's hybrid_alpha first (evaluation.tuning)
    holdout: float = 0.0  # --holdout: fraction of the queries kept out of tuning and scored alone

    def collection_name(self) -> str:
        if self.collection is not None:
            return self.collection
        slug = re.sub(r"[^a-z0-9_-]+", "-", self.dataset.resolve().name.lower()).strip("-_")[:63]
        return slug or "eval"


def parse_modes(text: str) -> list[SearchType]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"--modes takes a comma-separated subset of {','.join(MODES)}, got {text!r}")
    # User order, duplicates dropped.
    return [cast(SearchType, m) for m in dict.fromkeys(modes)]


# Every setting that shapes the stored chunks and their embeddings (part of the eval database's name).
STORED_CHUNK_SETTINGS = (
    "chunk_size",
    "chunk_overlap",
    "chunk_include_title",
    "embedding_provider",
    "embedding_model",
    "embedding_dim",
)
# Every setting that changes how a stored corpus is searched (recorded with the scores).
SEARCH_SETTINGS = (
    "fusion",
    "rrf_k",
    "hybrid_alpha",
    "hybrid_vector_weight",
    "hybrid_bm25_weight",
    "bm25_k1",
    "bm25_b",
    "hybrid_candidates",
    "hnsw_ef_search",
)


def pick_settings(settings: Settings, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in names}


def eval_database_name(dataset: Path, settings: Settings) -> str:
    """eval_<hash12> of the corpus bytes and every setting that shapes the stored chunks."""
    key: dict[str, Any] = {
        "format": EVAL_FORMAT,
        "dataset": str(dataset.resolve()),
        "corpus_sha256": corpus_fingerprint(dataset),
        **pick_settings(settings, STORED_CHUNK_SETTINGS),
    }
    # Only when not fp32: the fp32 databases built before precision existed keep their names.
    if settings.embedding_precision != "fp32":
        key["embedding_precision"] = settings.embedding_precision
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return f"eval_{digest[:12]}"


def _ingest_complete(documents: int, collection: str) -> Callable[[asyncpg.Connection], Awaitable[bool]]:
    async def complete(conn: asyncpg.Connection) -> bool:
        if not await admin.has_app_meta(conn):
            return False
        marker = await admin.get_meta(conn, INGEST_MARKER)
        # A database ingested before collections existed holds the corpus in `default`.
        return (
            isinstance(marker, dict)
            and marker.get("documents") == documents
            and marker.get("collection", "default") == collection
        )

    return complete


async def prepare_database(
    server_url: str, name: str, documents: int, fresh: bool, collection: str = "default"
) -> bool:
    """Create the eval database if needed; True when a complete earlier ingestion can be reused.

    --fresh, or an interrupted/partial ingestion, rebuilds it: never score against half a corpus.
    """
    return await admin.reuse_or_recreate(server_url, name, _ingest_complete(documents, collection), fresh)


def beir_direct_document(doc: BeirDocument) -> DirectDocument:
    """A BEIR document as the eval stores it: one .txt file of title + text, the BEIR id in metadata."""
    from rag_server.ingestion.pipeline import DirectDocument

    return DirectDocument(
        filename=f"{doc.doc_id}.txt",
        content=f"{doc.title}\n\n{doc.text}".encode(),
        metadata={"beir_id": doc.doc_id, "title": doc.title},
    )


async def ingest_corpus(
    runtime: Runtime, dataset: BeirDataset, quiet: bool, collection: str = "default"
) -> None:
    from rag_server.collections.models import CreateCollection
    from rag_server.collections.store import create_collection, get_collection
    from rag_server.errors import NotFoundError
    from rag_server.ingestion.pipeline import ingest_documents_direct

    try:
        target = await get_collection(runtime.pool, collection)
    except NotFoundError:
        target = await create_collection(runtime.pool, CreateCollection(name=collection))

    docs = list(dataset.corpus.values())
    stored_ids: list[str] = []
    with progress_bar("ingesting documents", len(docs), quiet) as bar:
        for start in range(0, len(docs), INGEST_BATCH):
            batch = [beir_direct_document(doc) for doc in docs[start : start + INGEST_BATCH]]
            base = bar.n

            def advance(done_in_batch: int, base: int = base) -> None:
                bar.update(base + done_in_batch - bar.n)

            ids = await ingest_documents_direct(runtime, batch, progress=advance, collection_id=target.id)
            stored_ids += [str(i) for i in ids]
            bar.update(base + len(batch) - bar.n)
    # Identical bytes are stored once (dedup by sha256): remember every BEIR id of such a document.
    aliases: dict[str, list[str]] = {}
    for doc, stored in zip(docs, stored_ids, strict=True):
        aliases.setdefault(stored, []).append(doc.doc_id)
    duplicates = {stored: ids for stored, ids in aliases.items() if len(ids) > 1}
    async with runtime.pool.acquire() as conn:
        failed = await conn.fetchval("SELECT count(*) FROM documents WHERE status <> 'ready'")
        chunks = await conn.fetchval("SELECT count(*) FROM chunks")
        # Written last: only a finished ingestion is ever reused.
        await admin.set_meta(
            conn,
            INGEST_MARKER,
            {
                "documents": len(docs),
                "chunks": chunks,
                "not_ready": failed,
                "duplicates": duplicates,
                "dataset": dataset.name,
                "collection": collection,
                "finished_at": time.time(),
            },
        )


async def _document_ids(runtime: Runtime) -> dict[str, list[str]]:
    """Stored document id -> the BEIR ids it stands for (more than one only for identical documents)."""
    rows = await runtime.pool.fetch("SELECT id, metadata->>'beir_id' AS beir_id FROM documents")
    marker = await admin.get_meta(runtime.pool, INGEST_MARKER)
    mapping = {str(r["id"]): [r["beir_id"]] for r in rows}
    mapping.update(marker.get("duplicates", {}) if isinstance(marker, dict) else {})
    return mapping


async def run_mode(
    runtime: Runtime,
    mode: SearchType,
    queries: Sequence[tuple[str, str]],
    doc_ids: dict[str, list[str]],
    top_k: int,
    quiet: bool,
    collection: str = "default",
    group_by: GroupBy = "chunk",
) -> tuple[dict[str, list[str]], list[float]]:
    from rag_server.retrieval.models import SearchRequest
    from rag_server.retrieval.service import search

    run: dict[str, list[str]] = {}
    latencies: list[float] = []
    # One untimed query first: the first call pays for connection warm-up and lazy imports.
    scope = [collection]

    def request(text: str) -> SearchRequest:
        return SearchRequest(query=text, top_k=top_k, search_type=mode, collections=scope, group_by=group_by)

    await search(runtime, request(queries[0][1]))
    with progress_bar(f"querying {mode}", len(queries), quiet) as bar:
        for qid, text in queries:
            started = time.perf_counter()
            response = await search(runtime, request(text))
            latencies.append((time.perf_counter() - started) * 1000)
            run[qid] = fold_to_documents(
                [beir for hit in response.results for beir in doc_ids[str(hit.document_id)]]
            )
            bar.update()
    return run, latencies


def select_queries(
    dataset: BeirDataset, options: EvalOptions
) -> tuple[list[tuple[str, str]], dict[str, dict[str, int]]]:
    """(query id, text) pairs to run and their relevance judgements."""
    qids = dataset.test_query_ids()
    if options.max_queries is not None:
        qids = qids[: options.max_queries]
    if not qids:
        raise ValueError(f"{options.dataset}: no test query has both a text and relevance judgements")
    return [(qid, dataset.queries[qid]) for qid in qids], {qid: dict(dataset.qrels[qid]) for qid in qids}


async def score_modes(
    runtime: Runtime,
    queries: Sequence[tuple[str, str]],
    qrels: dict[str, dict[str, int]],
    options: EvalOptions,
    doc_ids: dict[str, list[str]] | None = None,
) -> dict[str, dict[str, Any]]:
    doc_ids = doc_ids if doc_ids is not None else await _document_ids(runtime)
    modes: dict[str, dict[str, Any]] = {}
    for mode in options.modes:
        run, latencies = await run_mode(
            runtime,
            mode,
            queries,
            doc_ids,
            options.top_k,
            options.quiet,
            options.collection_name(),
            options.group_by,
        )
        modes[mode] = {**evaluate(run, qrels), "latency_ms": latency_summary(latencies)}
    return modes


async def run_eval(settings: Settings, options: EvalOptions) -> dict[str, Any]:
    if not 1 <= options.top_k <= 100:
        raise ValueError("--top-k must be between 1 and 100")
    dataset = await asyncio.to_thread(load_beir, options.dataset)
    selected, qrels = select_queries(dataset, options)
    # Without --holdout the tuning and the scores use every selected query (in-sample).
    tune_queries, held = split_queries(selected, options.holdout)
    queries = held if options.holdout > 0 else selected
    if not queries:
        raise ValueError("--holdout leaves no query to score")

    name = await asyncio.to_thread(eval_database_name, options.dataset, settings)
    server_url = await asyncio.to_thread(resolve_database_url, settings)
    collection = options.collection_name()
    reused = await prepare_database(server_url, name, len(dataset.corpus), options.fresh, collection)
    eval_settings = settings.model_copy(update={"database_url": with_database(server_url, name)})
    if not options.quiet:
        print(
            f"eval database {name} ({'reused' if reused else 'new'}); {len(queries)} test queries",
            file=sys.stderr,
        )

    async with open_runtime(eval_settings, migrate=True, load_embedder="queries") as runtime:
        if not reused:
            await ingest_corpus(runtime, dataset, options.quiet, collection)
        chunks = int(await runtime.pool.fetchval("SELECT count(*) FROM chunks"))
        engine = await bm25_engine(runtime)
        doc_ids = await _document_ids(runtime)
        tuning = await _tune(runtime, tune_queries, qrels, doc_ids, options)
        scored_qrels = {qid: qrels[qid] for qid, _ in queries}
        modes = await score_modes(runtime, queries, scored_qrels, options, doc_ids)
        collection_alpha = (await get_collection(runtime.pool, collection)).hybrid_alpha
        if (
            options.holdout > 0
            and tuning is None
            and collection_alpha is not None
            and "hybrid" in options.modes
        ):
            # Said even with --quiet: the held-out score is no held-out score if that alpha saw these queries.
            print(
                f"note: hybrid scores use collection {collection!r}'s stored hybrid_alpha "
                f"{collection_alpha}, set by an earlier --tune that may have seen these held-out queries; "
                "--tune --holdout tunes on the other queries only",
                file=sys.stderr,
            )
        peer_results: dict[str, dict[str, Any]] = {}
        if options.peers:
            from rag_server.evaluation.peer_runs import run_peers

            peer_results = await run_peers(
                runtime, dataset, queries, scored_qrels, chunks, options.top_k, options.quiet
            )

    result: dict[str, Any] = {
        "dataset": dataset.name,
        "documents": len(dataset.corpus),
        "chunks": chunks,
        "queries": len(queries),
        "settings": {
            "database": name,
            "collection": collection,
            "reused_database": reused,
            "top_k": options.top_k,
            "max_queries": options.max_queries,
            "holdout": options.holdout,
            "group_by": options.group_by,
            "collection_hybrid_alpha": collection_alpha,
            **pick_settings(settings, STORED_CHUNK_SETTINGS),
            "embedding_precision": settings.embedding_precision,
            "query_embedding_precision": settings.query_precision,
            "bm25_engine": engine,
            **pick_settings(settings, SEARCH_SETTINGS),
        },
        "modes": modes,
        "peers": peer_results,
    }
    if tuning is not None:
        result["tuning"] = tuning
    report.write_outputs(result, options.json_path, options.report_path)
    return result


async def _tune(
    runtime: Runtime,
    queries: Sequence[tuple[str, str]],
    qrels: dict[str, dict[str, int]],
    doc_ids: dict[str, list[str]],
    options: EvalOptions,
) -> dict[str, Any] | None:
    if not options.tune:
        return None
    tuning = await tune_alpha(
        runtime, queries, qrels, doc_ids, options.collection_name(), options.group_by, options.top_k
    )
    if not options.quiet:
        print(f"tuned hybrid_alpha {tuning['alpha']} on {len(queries)} queries", file=sys.stderr)
    return tuning
