"""Rocchio pseudo-relevance feedback on the vector leg, on the SciFact eval database (issue 16). A study, not
product code: run from the repository root with PYTHONPATH=services after `rag-server eval` built the eval
database. The vector leg is exact (numpy over every chunk vector, so it differs from HNSW by a hair); the
BM25 leg is the product's at the hybrid depth (50); fusion is the product's convex, folded after."""
import asyncio, pickle, sys
from pathlib import Path
import numpy as np
from rag_server.config import Settings
from rag_server.evaluation.beir import load_beir
from rag_server.evaluation.metrics import evaluate, fold_to_documents
from rag_server.evaluation.runner import eval_database_name, _document_ids
from rag_server.infra.database import resolve_database_url, with_database
from rag_server.infra.runtime import open_runtime
from rag_server.retrieval.fusion import convex
from rag_server.retrieval.legs import LegHit
from rag_server.retrieval.service import bm25_search
from rag_server.collections.store import resolve_ids
DATASET = Path("/work/shared/datasets/scifact"); CACHE = Path("/tmp/prf/cache.pkl")
async def collect():
    settings = Settings(); ds = load_beir(DATASET)
    url = with_database(resolve_database_url(settings), eval_database_name(DATASET, settings))
    async with open_runtime(settings.model_copy(update={"database_url": url}), migrate=True, load_embedder=True) as rt:
        scope = await resolve_ids(rt.pool, ["scifact"])
        rows = await rt.pool.fetch("SELECT id, document_id, embedding::text AS e FROM chunks ORDER BY id")
        ids = np.array([r["id"] for r in rows]); docs = [str(r["document_id"]) for r in rows]
        E = np.array([np.array(r["e"][1:-1].split(","), dtype=np.float32) for r in rows])
        qids = ds.test_query_ids(); Q = await rt.embedder.embed([ds.queries[q] for q in qids])
        di = await _document_ids(rt)
        bm = {q: await bm25_search(rt, ds.queries[q], 50, None, scope) for q in qids}
    return dict(ids=ids, docs=docs, E=E, qids=qids, Q=np.asarray(Q), bm=bm, di=di)
data = pickle.loads(CACHE.read_bytes()) if CACHE.exists() else asyncio.run(collect())
CACHE.write_bytes(pickle.dumps(data))
ids, docs, E, qids, Q, bm, di = data["ids"], data["docs"], data["E"], data["qids"], data["Q"], data["bm"], data["di"]
row_of = {int(c): i for i, c in enumerate(ids)}
ds = load_beir(DATASET); qrels = {q: dict(ds.qrels[q]) for q in qids}
held = qids[1::2]
def vleg(qv, n=50):
    s = E @ qv; top = np.argsort(-s)[:n]
    return [LegHit(int(ids[i]), float(s[i])) for i in top]
def fold(hits):
    return fold_to_documents([x for h in hits for x in di[docs[row_of[h.chunk_id]]]])
def run(beta=0.0, k=3, source="hybrid", alpha=0.5, gamma=0.0):
    out = {}
    for qi, q in enumerate(qids):
        qv = Q[qi]; v = vleg(qv); b = bm[q]
        if beta > 0:
            first = convex(v, b, alpha) if source == "hybrid" else v
            fb = [row_of[h.chunk_id] for h in first[:k]]
            qv2 = qv + beta * E[fb].mean(axis=0)
            qv2 /= np.linalg.norm(qv2); v = vleg(qv2)
        fused = convex(v, b, alpha)
        out[q] = fold(fused[:100])
    return out
def show(label, **kw):
    r = run(**kw)
    a = evaluate(r, qrels); h = evaluate({q: r[q] for q in held}, {q: qrels[q] for q in held})
    print(f"{label:40s} all {a['ndcg@10']:.4f} R10 {a['recall@10']:.4f} R100 {a['recall@100']:.4f} | held {h['ndcg@10']:.4f}", flush=True)
show("baseline (exact vector)")
for src in ("hybrid", "vector"):
    for k in (3, 5, 10):
        for beta in (0.3, 0.6, 1.0):
            show(f"prf {src} k={k} beta={beta}", beta=beta, k=k, source=src)
