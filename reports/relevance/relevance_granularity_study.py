"""Chunk size as a relevance lever (issue 16): the eval databases at RAG_CHUNK_SIZE 64, 128 (the default) and 256
(overlap size/8, built by `RAG_CHUNK_SIZE=... rag-server eval`), both legs at depth 100 folded to documents, then
every BM25 chunking fused with every vector chunking per document (convex, min-max). A study, not product
code: run from the repository root with PYTHONPATH=services (`collect` first, then without it)."""

import asyncio
import pickle
import sys
from pathlib import Path

from rag_server.collections.store import resolve_ids
from rag_server.config import Settings
from rag_server.evaluation.beir import load_beir
from rag_server.evaluation.metrics import evaluate
from rag_server.evaluation.runner import _document_ids, eval_database_name
from rag_server.infra.database import resolve_database_url, with_database
from rag_server.infra.runtime import open_runtime
from rag_server.retrieval.service import bm25_search, vector_search

DATASET = Path("/work/shared/datasets/scifact")
DEPTH = 100
CACHE = Path("/tmp/gran/legs.pkl")


async def collect():
    ds = load_beir(DATASET)
    out = {}
    for cs in (64, 128, 256):
        settings = Settings(chunk_size=cs, chunk_overlap=cs // 8)
        name = eval_database_name(DATASET, settings)
        url = with_database(resolve_database_url(settings), name)
        s = settings.model_copy(update={"database_url": url})
        async with open_runtime(s, migrate=False, load_embedder=True) as rt:
            scope = await resolve_ids(rt.pool, ["scifact"])
            docs = await _document_ids(rt)
            rows = await rt.pool.fetch("SELECT id, document_id FROM chunks")
            chunk_doc = {int(r["id"]): str(r["document_id"]) for r in rows}
            legs = {}
            for qid in ds.test_query_ids():
                text = ds.queries[qid]
                b = await bm25_search(rt, text, DEPTH, None, scope)
                v = await vector_search(rt, text, DEPTH, None, None, scope)

                def fold(hits):
                    seen, res = set(), []
                    for h in hits:
                        d = chunk_doc.get(h.chunk_id)
                        if d is None or d in seen:
                            continue
                        seen.add(d)
                        for beir in docs.get(d, []):
                            res.append((beir, h.score))
                    return res

                legs[qid] = (fold(b), fold(v))
            out[cs] = legs
        print("collected", cs, name, len(chunk_doc), flush=True)
    CACHE.write_bytes(pickle.dumps(out))


def minmax(xs):
    if not xs:
        return []
    lo, hi = min(xs), max(xs)
    return [1.0 if hi == lo else (x - lo) / (hi - lo) for x in xs]


def fuse(b, v, alpha):
    s = {}
    for hits, w in ((v, alpha), (b, 1 - alpha)):
        for (d, _), n in zip(hits, minmax([x for _, x in hits])):
            s[d] = s.get(d, 0.0) + w * n
    return [d for d, _ in sorted(s.items(), key=lambda e: -e[1])]


def analyse():
    ds = load_beir(DATASET)
    legs = pickle.loads(CACHE.read_bytes())
    qids = ds.test_query_ids()
    held = qids[1::2]
    for cs in legs:
        for leg, i in (("bm25", 0), ("vector", 1)):
            run = {q: [d for d, _ in legs[cs][q][i]] for q in qids}
            print(f"{leg:6s} cs={cs:3d} nDCG@10 {evaluate(run, ds.qrels)['ndcg@10']:.4f}")
    for bcs in legs:
        for vcs in legs:
            for alpha in (0.4, 0.5, 0.6):
                run = {q: fuse(legs[bcs][q][0], legs[vcs][q][1], alpha) for q in qids}
                m = evaluate(run, ds.qrels)
                mh = evaluate({q: run[q] for q in held}, {q: ds.qrels[q] for q in held})
                print(
                    f"bm25 cs={bcs:3d} vector cs={vcs:3d} a={alpha}: nDCG@10 {m['ndcg@10']:.4f} R@100 {m['recall@100']:.4f} (held {mh['ndcg@10']:.4f})"
                )


if __name__ == "__main__":
    if sys.argv[1] == "collect":
        asyncio.run(collect())
    analyse()
