"""Global or per-collection BM25 statistics? Measured (docs/decisions/0009-bm25-statistics.md).

    python -m rag_server.evaluation.bm25_stats_study --dataset ../shared/datasets/scifact \
        --json reports/bm25-stats.json

For each setup (bm25_stats_corpora: collections sharing one database) a database holds every collection,
chunked exactly as `rag-server eval` chunks (ingest_documents_direct). BM25 needs only text: the chunks
get zero vectors (a zero embedder; no model is loaded). Each collection with queries is then scored
scoped to itself, top 100 chunks folded to documents as the eval does, three ways:
- reference, global statistics: N, avgdl and df over every chunk of the database (what is implemented);
- reference, collection statistics: the same counted over the scoped collection's chunks only;
- the native engine through retrieval.service.search (global statistics): it must equal the first.
The reference is evaluation/bm25_reference, the one the native engine's tests hold it to (1e-6).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from rag_server.config import Settings
from rag_server.evaluation.beir import load_beir
from rag_server.evaluation.bm25_reference import Bm25Index, Bm25Stats, ranked, token_counts
from rag_server.evaluation.bm25_stats_corpora import (
    MARKER,
    Setup,
    StoredSetup,
    StudyCollection,
    ZeroEmbedder,
    build_setups,
    database_name,
    read_setup,
    store_setup,
)
from rag_server.evaluation.metrics import evaluate, fold_to_documents, ndcg_at_k
from rag_server.evaluation.progress import progress_bar
from rag_server.evaluation.report import write_json
from rag_server.evaluation.runner import STORED_CHUNK_SETTINGS, pick_settings
from rag_server.infra import admin
from rag_server.infra.database import resolve_database_url, with_database
from rag_server.infra.runtime import Runtime, open_runtime
from rag_server.retrieval.legs import clean_query

TOP_K = 100  # chunks per query, as `rag-server eval` asks for
VARIANTS = ("global", "collection")


@dataclass
class StudyOptions:
    dataset: Path
    setups: Sequence[str] | None = None  # None: every setup
    other_size: int | None = None  # stdlib docstrings in the mixed setups (None: as many as the dataset)
    max_queries: int | None = None
    fresh: bool = False
    quiet: bool = False
    json_path: Path | None = None


async def tokenize(runtime: Runtime, stored: StoredSetup, cache: dict[str, Counter[str]]) -> Bm25Index:
    """The reference's token counts of every chunk; texts seen in an earlier setup are not re-read."""
    missing = sorted({text for _, text in stored.chunks.values()} - cache.keys())
    async with runtime.pool.acquire() as conn:
        cache.update(zip(missing, await token_counts(conn, missing), strict=True))
    return Bm25Index({chunk_id: cache[text] for chunk_id, (_, text) in stored.chunks.items()})


def _stats_summary(stats: Bm25Stats) -> dict[str, Any]:
    return {"chunks": stats.n_docs, "tokens": stats.total_len, "avgdl": round(stats.avgdl, 3)}


async def native_rankings(
    runtime: Runtime, collection: str, queries: Sequence[tuple[str, str]], quiet: bool
) -> dict[str, list[tuple[int, float]]]:
    """(chunk id, score) best first from the real search path (what /search runs), per query."""
    from rag_server.retrieval.models import SearchRequest
    from rag_server.retrieval.service import search

    out: dict[str, list[tuple[int, float]]] = {}
    with progress_bar(f"native bm25 in {collection}", len(queries), quiet) as bar:
        for qid, text in queries:
            request = SearchRequest(query=text, top_k=TOP_K, search_type="bm25", collections=[collection])
            response = await search(runtime, request)
            out[qid] = [(hit.chunk_id, hit.score) for hit in response.results]
            bar.update()
    return out


def native_agreement(
    native: dict[str, list[tuple[int, float]]],
    reference: dict[str, list[int]],
    reference_scores: dict[str, dict[int, float]],
) -> dict[str, Any]:
    """How far the native engine is from the reference with global statistics: rankings and scores."""
    differences = [
        abs(score - reference_scores[qid][cid]) if cid in reference_scores[qid] else float("inf")
        for qid, hits in native.items()
        for cid, score in hits
    ]
    return {
        "queries_with_identical_top100_chunks": sum(
            [cid for cid, _ in hits] == reference[qid] for qid, hits in native.items()
        ),
        "chunks_unknown_to_reference": sum(d == float("inf") for d in differences),
        "max_abs_score_difference": max((d for d in differences if d != float("inf")), default=0.0),
    }


async def score_collection(
    runtime: Runtime,
    index: Bm25Index,
    stored: StoredSetup,
    collection: StudyCollection,
    texts: dict[str, str],
    options: StudyOptions,
) -> dict[str, Any]:
    """Reference global vs collection statistics and the native engine, scoped to `collection`."""
    settings = runtime.settings
    qids = list(collection.qrels)[: options.max_queries]
    qrels = {qid: collection.qrels[qid] for qid in qids}
    queries = [(qid, clean_query(texts[qid])) for qid in qids]
    async with runtime.pool.acquire() as conn:
        terms = dict(zip(qids, await token_counts(conn, [text for _, text in queries]), strict=True))
    allowed = {cid for cid, (name, _) in stored.chunks.items() if name == collection.name}
    stats = {"global": index.stats(), "collection": index.stats(allowed)}

    def to_docs(chunk_ids: Sequence[int]) -> list[str]:
        return fold_to_documents([beir for cid in chunk_ids for beir in stored.documents[cid]])

    chunk_runs: dict[str, dict[str, list[int]]] = {v: {} for v in VARIANTS}
    global_scores: dict[str, dict[int, float]] = {}  # every matching chunk's score, for the native check
    for variant in VARIANTS:
        for qid in qids:
            by_chunk = index.scores(terms[qid], stats[variant], settings.bm25_k1, settings.bm25_b, allowed)
            chunk_runs[variant][qid] = ranked(by_chunk, TOP_K)
            if variant == "global":
                global_scores[qid] = by_chunk
    runs = {v: {qid: to_docs(chunk_runs[v][qid]) for qid in qids} for v in VARIANTS}
    native = await native_rankings(runtime, collection.name, queries, options.quiet)
    native_run = {qid: to_docs([cid for cid, _ in native[qid]]) for qid in qids}
    per_query = [
        (ndcg_at_k(runs["global"][q], qrels[q], 10), ndcg_at_k(runs["collection"][q], qrels[q], 10))
        for q in qids
    ]
    return {
        "name": collection.name,
        "documents": len(collection.documents),
        "queries": len(qids),
        "statistics": {v: _stats_summary(stats[v]) for v in VARIANTS},
        "reference": {v: evaluate(runs[v], qrels) for v in VARIANTS},
        "native_global": evaluate(native_run, qrels),
        "native_vs_reference_global": native_agreement(native, chunk_runs["global"], global_scores),
        "per_query_ndcg@10": {
            "global_better": sum(g > c + 1e-12 for g, c in per_query),
            "collection_better": sum(c > g + 1e-12 for g, c in per_query),
            "equal": sum(abs(g - c) <= 1e-12 for g, c in per_query),
            "top10_identical": sum(runs["global"][q][:10] == runs["collection"][q][:10] for q in qids),
        },
    }


async def run_setup(
    settings: Settings,
    server_url: str,
    setup: Setup,
    texts: dict[str, str],
    options: StudyOptions,
    cache: dict[str, Counter[str]],
) -> dict[str, Any]:
    name = database_name(setup, settings)

    async def complete(conn: asyncpg.Connection) -> bool:
        return await admin.has_app_meta(conn) and await admin.get_meta(conn, MARKER) is not None

    reused = await admin.reuse_or_recreate(server_url, name, complete, options.fresh)
    study_settings = settings.model_copy(update={"database_url": with_database(server_url, name)})
    embedder = ZeroEmbedder(settings.embedding_dim)
    async with open_runtime(study_settings, migrate=True, embedder=embedder) as runtime:
        if not reused:
            await store_setup(runtime, setup, options.quiet)
        stored = await read_setup(runtime)
        index = await tokenize(runtime, stored, cache)
        collections = []
        for collection in setup.collections:
            chunks = sum(1 for c, _ in stored.chunks.values() if c == collection.name)
            if not collection.qrels:
                collections.append(
                    {
                        "name": collection.name,
                        "documents": len(collection.documents),
                        "chunks": chunks,
                        "queries": 0,
                    }
                )
                continue
            scored = await score_collection(runtime, index, stored, collection, texts, options)
            collections.append({**scored, "chunks": chunks})
    return {
        "name": setup.name,
        "description": setup.description,
        "database": name,
        "reused": reused,
        "collections": collections,
    }


async def run_study(settings: Settings, options: StudyOptions) -> dict[str, Any]:
    dataset = await asyncio.to_thread(load_beir, options.dataset)
    setups = await asyncio.to_thread(build_setups, dataset, options.other_size)
    if options.setups is not None:
        unknown = set(options.setups) - {s.name for s in setups}
        if unknown:
            raise ValueError(f"unknown setup(s) {sorted(unknown)}; known: {[s.name for s in setups]}")
        setups = [s for s in setups if s.name in options.setups]
    server_url = await asyncio.to_thread(resolve_database_url, settings)
    cache: dict[str, Counter[str]] = {}
    results = [await run_setup(settings, server_url, s, dataset.queries, options, cache) for s in setups]
    result = {
        "study": "bm25-statistics",
        "dataset": dataset.name,
        "settings": {
            "bm25_k1": settings.bm25_k1,
            "bm25_b": settings.bm25_b,
            "top_k_chunks": TOP_K,
            "vectors": "zero (BM25 only)",
            **pick_settings(settings, STORED_CHUNK_SETTINGS),
        },
        "setups": results,
    }
    write_json(options.json_path, result)
    return result


COLUMNS = (
    "setup",
    "collection",
    "docs",
    "chunks",
    "queries",
    "nDCG@10 global",
    "nDCG@10 coll.",
    "delta",
    "R@100 global",
    "R@100 coll.",
    "native nDCG@10",
)


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for setup in result["setups"]:
        for c in setup["collections"]:
            if not c["queries"]:
                rows.append(
                    [setup["name"], c["name"], str(c["documents"]), str(c["chunks"]), "0"]
                    + ["-"] * (len(COLUMNS) - 5)
                )
                continue
            g, p = c["reference"]["global"], c["reference"]["collection"]
            rows.append(
                [
                    setup["name"],
                    c["name"],
                    str(c["documents"]),
                    str(c["chunks"]),
                    str(c["queries"]),
                    f"{g['ndcg@10']:.4f}",
                    f"{p['ndcg@10']:.4f}",
                    f"{p['ndcg@10'] - g['ndcg@10']:+.4f}",
                    f"{g['recall@100']:.4f}",
                    f"{p['recall@100']:.4f}",
                    f"{c['native_global']['ndcg@10']:.4f}",
                ]
            )
    return rows


def text_table(result: dict[str, Any]) -> str:
    rows = [list(COLUMNS), *table_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rag_server.evaluation.bm25_stats_study",
        description="BM25 nDCG@10 / Recall@100 of each collection under global and per-collection "
        "statistics, and the native engine (global statistics) on the same collections.",
    )
    parser.add_argument(
        "--dataset", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)"
    )
    parser.add_argument("--setups", default=None, help="comma-separated subset of the setups (default: all)")
    parser.add_argument(
        "--other-size", type=int, default=None, help="stdlib docstrings (default: as many as the dataset)"
    )
    parser.add_argument(
        "--max-queries", type=int, default=None, help="score only the first N queries per collection"
    )
    parser.add_argument("--json", default=None, metavar="OUT.json", help="write the results as JSON")
    parser.add_argument("--fresh", action="store_true", help="rebuild the study databases")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    from rag_server.evaluation.commands import output_path

    try:
        json_path = output_path(args.json, "--json")  # now, not after the study's hour
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = StudyOptions(
        dataset=Path(args.dataset),
        setups=[s.strip() for s in args.setups.split(",") if s.strip()] if args.setups else None,
        other_size=args.other_size,
        max_queries=args.max_queries,
        fresh=args.fresh,
        quiet=args.quiet,
        json_path=json_path,
    )
    from rag_server.config import get_settings
    from rag_server.evaluation.beir import BeirFormatError

    try:
        result = asyncio.run(run_study(get_settings(), options))
    except (BeirFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text_table(result))
    if options.json_path is not None:
        print(f"json: {options.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
