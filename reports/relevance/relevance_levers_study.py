"""Relevance levers on the SciFact eval database (issue 16). A study, not product code: run from the repository
root with PYTHONPATH=services after `rag-server eval --dataset /work/shared/datasets/scifact` built the eval
database. Both legs run once per test query at depth 400 (through retrieval.service, the product's legs);
every variant (fold before/after fusion, depth, alpha, RRF, BM25 analyzer) is then computed offline. The
analyzer variants score BM25 in Python over to_tsvector(<config>, search_text) lexemes (the 'english' row
reproduces the native engine: same numbers). "held" = the odd-position test queries; alpha is tuned on the
even ones."""

from __future__ import annotations

import asyncio
import json
import math
import pickle
import sys
from collections import defaultdict
from pathlib import Path

from rag_server.config import Settings
from rag_server.evaluation.beir import load_beir
from rag_server.evaluation.metrics import evaluate, fold_to_documents
from rag_server.evaluation.runner import _document_ids, eval_database_name
from rag_server.infra.database import resolve_database_url, with_database, owner_connection
from rag_server.infra.runtime import open_runtime
from rag_server.retrieval.fusion import convex, rrf
from rag_server.retrieval.legs import LegHit
from rag_server.retrieval.service import bm25_search, vector_search
from rag_server.collections.store import resolve_ids

DATASET = Path("/work/shared/datasets/scifact")
DEPTH = 400
CACHE = Path("/tmp/rel/legs.pkl")


async def collect() -> dict:
    settings = Settings()
    ds = load_beir(DATASET)
    name = eval_database_name(DATASET, settings)
    url = with_database(resolve_database_url(settings), name)
    s = settings.model_copy(update={"database_url": url})
    async with open_runtime(s, migrate=True, load_embedder=True) as rt:
        scope = await resolve_ids(rt.pool, ["scifact"])
        doc_ids = await _document_ids(rt)
        rows = await rt.pool.fetch("SELECT id, document_id FROM chunks")
        chunk_doc = {int(r["id"]): str(r["document_id"]) for r in rows}
        legs = {}
        for qid in ds.test_query_ids():
            text = ds.queries[qid]
            b = await bm25_search(rt, text, DEPTH, None, scope)
            v = await vector_search(rt, text, DEPTH, None, None, scope)
            legs[qid] = (b, v)
        # analyzer study: lexemes per chunk for several configurations
        analyzers = {}
        async with owner_connection(rt.database_url) as conn:
            await conn.execute(
                """
                DO $$ BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgname = 'english_nostop') THEN
                    CREATE TEXT SEARCH DICTIONARY english_stem_nostop (TEMPLATE = snowball, Language = english);
                    CREATE TEXT SEARCH CONFIGURATION english_nostop (COPY = english);
                    ALTER TEXT SEARCH CONFIGURATION english_nostop
                        ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part
                        WITH english_stem_nostop;
                END IF; END $$;
                """
            )
            for cfg in ("english", "simple", "english_nostop"):
                rs = await conn.fetch(
                    f"SELECT c.id, t.lexeme, cardinality(t.positions) AS tf FROM chunks c,"
                    f" unnest(to_tsvector('{cfg}', c.search_text)) t"
                )
                postings = defaultdict(list)
                for r in rs:
                    postings[r["lexeme"]].append((int(r["id"]), int(r["tf"])))
                qterms = {}
                for qid in ds.test_query_ids():
                    qr = await conn.fetch(
                        f"SELECT lexeme FROM unnest(to_tsvector('{cfg}', $1::text))", ds.queries[qid]
                    )
                    qterms[qid] = [r["lexeme"] for r in qr]
                analyzers[cfg] = (dict(postings), qterms)
    return {"legs": legs, "chunk_doc": chunk_doc, "doc_ids": doc_ids, "analyzers": analyzers}


def bm25_python(postings, qterms, k1=1.2, b=0.75, k=DEPTH):
    doc_len = defaultdict(int)
    for plist in postings.values():
        for cid, tf in plist:
            doc_len[cid] += tf
    n = len(doc_len)
    avgdl = sum(doc_len.values()) / n
    out = {}
    for qid, terms in qterms.items():
        scores = defaultdict(float)
        for t in terms:
            plist = postings.get(t)
            if not plist:
                continue
            df = len(plist)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            for cid, tf in plist:
                scores[cid] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * doc_len[cid] / avgdl))
        best = sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:k]
        out[qid] = [LegHit(c, s) for c, s in best]
    return out


def fold_leg(hits, chunk_doc):
    """best chunk per document, documents ordered by it"""
    seen, out = set(), []
    for h in hits:
        d = chunk_doc[h.chunk_id]
        if d not in seen:
            seen.add(d)
            out.append((d, h.score))
    return out


def run_variant(data, qids, *, depth, mode, fusion="convex", alpha=0.5, bm25_legs=None, top_k=100,
                rrf_k=60):
    chunk_doc, doc_ids = data["chunk_doc"], data["doc_ids"]
    run = {}
    for qid in qids:
        b, v = data["legs"][qid]
        if bm25_legs is not None:
            b = bm25_legs[qid]
        b, v = b[:depth], v[:depth]
        if mode == "after":
            fused = convex(v, b, alpha) if fusion == "convex" else rrf({"vector": v, "bm25": b}, rrf_k)
            docs = [chunk_doc[h.chunk_id] for h in fused[:top_k]]
        else:
            # per-document legs: doc id -> pseudo chunk id via index
            fb, fv = fold_leg(b, chunk_doc), fold_leg(v, chunk_doc)
            index = {}
            for d, _ in fb + fv:
                index.setdefault(d, len(index))
            rev = {i: d for d, i in index.items()}
            lb = [LegHit(index[d], s) for d, s in fb]
            lv = [LegHit(index[d], s) for d, s in fv]
            fused = convex(lv, lb, alpha) if fusion == "convex" else rrf({"vector": lv, "bm25": lb}, rrf_k)
            docs = [rev[h.chunk_id] for h in fused[:top_k]]
        run[qid] = fold_to_documents([beir for d in docs for beir in doc_ids[d]])
    return run


def single_leg(data, qids, leg, legs_override=None, top_k=100):
    run = {}
    for qid in qids:
        hits = (legs_override or {}).get(qid) if legs_override else data["legs"][qid][0 if leg == "bm25" else 1]
        docs = [data["chunk_doc"][h.chunk_id] for h in hits[:top_k]]
        run[qid] = fold_to_documents([beir for d in docs for beir in data["doc_ids"][d]])
    return run


def fmt(m):
    return f"{m['ndcg@10']:.4f} {m['recall@10']:.4f} {m['recall@100']:.4f}"


def main() -> None:
    if CACHE.exists():
        data = pickle.loads(CACHE.read_bytes())
    else:
        data = asyncio.run(collect())
        CACHE.write_bytes(pickle.dumps(data))
    ds = load_beir(DATASET)
    qids = ds.test_query_ids()
    qrels = {q: dict(ds.qrels[q]) for q in qids}
    tune, held = qids[0::2], qids[1::2]
    sub = lambda ids: {q: qrels[q] for q in ids}  # noqa: E731
    results = {}

    def score(label, ids, run):
        m = evaluate(run, sub(ids))
        results[label] = m
        print(f"{label:60s} {fmt(m)}")
        return m

    print("label                                                        nDCG@10 R@10 R@100")
    for split, ids in (("all", qids), ("held", held)):
        score(f"{split} bm25 (chunk leg, top100)", ids, single_leg(data, ids, "bm25"))
        score(f"{split} vector (chunk leg, top100)", ids, single_leg(data, ids, "vector"))
        for depth in (50, 100, 200, 400):
            for mode in ("after", "before"):
                for fusion in ("convex", "rrf"):
                    score(f"{split} {fusion} {mode} depth={depth} a=0.5", ids,
                          run_variant(data, ids, depth=depth, mode=mode, fusion=fusion))
    # alpha grid on the tune half, per mode/depth
    grid = [round(0.05 * i, 2) for i in range(21)]
    for mode in ("after", "before"):
        for depth in (100, 200, 400):
            best = max(grid, key=lambda a: evaluate(
                run_variant(data, tune, depth=depth, mode=mode, alpha=a), sub(tune))["ndcg@10"])
            tm = evaluate(run_variant(data, tune, depth=depth, mode=mode, alpha=best), sub(tune))
            print(f"tune {mode} depth={depth}: best alpha {best} (tune nDCG {tm['ndcg@10']:.4f})")
            score(f"held {mode} depth={depth} a={best} (tuned on other half)", held,
                  run_variant(data, held, depth=depth, mode=mode, alpha=best))
            score(f"all {mode} depth={depth} a={best}", qids,
                  run_variant(data, qids, depth=depth, mode=mode, alpha=best))
    # whole grid, all queries, for the curve
    for mode in ("after", "before"):
        curve = {a: evaluate(run_variant(data, qids, depth=100, mode=mode, alpha=a), qrels)["ndcg@10"]
                 for a in grid}
        print(mode, "alpha curve (all, depth 100):", {a: round(v, 4) for a, v in curve.items()})
    # fewer fusion candidates (RAG_HYBRID_CANDIDATES below 50), per leg: reports/bench-search-overhead.md
    for bm25_depth, vector_depth in ((10, 50), (20, 50), (30, 50), (20, 20), (30, 30)):
        cut = {q: (data["legs"][q][0][:bm25_depth], data["legs"][q][1][:vector_depth]) for q in qids}
        for split, ids in (("all", qids), ("held", held)):
            score(f"{split} convex after bm25 depth={bm25_depth} vector depth={vector_depth}", ids,
                  run_variant({**data, "legs": cut}, ids, depth=DEPTH, mode="after"))
    # analyzers
    for cfg, (postings, qterms) in data["analyzers"].items():
        legs = bm25_python(postings, {q: qterms[q] for q in qids})
        for split, ids in (("all", qids), ("held", held)):
            score(f"{split} analyzer={cfg} bm25 alone", ids, single_leg(data, ids, "bm25", legs))
            for mode in ("after", "before"):
                score(f"{split} analyzer={cfg} hybrid {mode} depth=100 a=0.5", ids,
                      run_variant(data, ids, depth=100, mode=mode, bm25_legs=legs))
    Path("/tmp/rel/study.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
