"""A document-level third leg on SciFact (issue 16): the query's cosine with each document's title alone, or
with the centroid of its chunk vectors, added with weight gamma to the product's two chunk legs (exact vector
leg in numpy, the product's BM25 leg, depth 100, convex 0.5, folded after or before). A study, not product
code: run from the repository root with PYTHONPATH=services after `rag-server eval` built the eval database."""
import asyncio, pickle
from pathlib import Path
import numpy as np
from rag_server.config import Settings
from rag_server.evaluation.beir import load_beir
from rag_server.evaluation.metrics import evaluate
from rag_server.evaluation.runner import eval_database_name, _document_ids
from rag_server.infra.database import resolve_database_url, with_database
from rag_server.infra.runtime import open_runtime
from rag_server.retrieval.service import bm25_search
from rag_server.collections.store import resolve_ids
DATASET = Path("/work/shared/datasets/scifact"); CACHE = Path("/tmp/document-leg/cache.pkl")
async def collect():
    settings = Settings(); ds = load_beir(DATASET)
    url = with_database(resolve_database_url(settings), eval_database_name(DATASET, settings))
    async with open_runtime(settings.model_copy(update={"database_url": url}), migrate=True, load_embedder=True) as rt:
        scope = await resolve_ids(rt.pool, ["scifact"])
        rows = await rt.pool.fetch("SELECT c.id, c.document_id, c.embedding::text AS e, d.metadata->>'beir_id' AS beir FROM chunks c JOIN documents d ON d.id=c.document_id ORDER BY c.id")
        ids = np.array([r["id"] for r in rows]); docs = [str(r["document_id"]) for r in rows]
        E = np.array([np.array(r["e"][1:-1].split(","), dtype=np.float32) for r in rows])
        qids = ds.test_query_ids()
        Q = np.array([await rt.embedder.embed_query(ds.queries[q]) for q in qids])
        di = await _document_ids(rt)
        dids = sorted(set(docs))
        titles = [ds.corpus[di[d][0]].title or "" for d in dids]
        T = np.asarray(await rt.embedder.embed(titles))
        bm = {q: await bm25_search(rt, ds.queries[q], 100, None, scope) for q in qids}
    return dict(ids=ids, docs=docs, E=E, qids=qids, Q=Q, bm=bm, di=di, dids=dids, T=T)
data = pickle.loads(CACHE.read_bytes()) if CACHE.exists() else asyncio.run(collect())
CACHE.parent.mkdir(exist_ok=True); CACHE.write_bytes(pickle.dumps(data))
globals().update(data)
ds = load_beir(DATASET); qrels = {q: dict(ds.qrels[q]) for q in qids}; held = qids[1::2]
row_of = {int(c): i for i, c in enumerate(ids)}
dix = {d: i for i, d in enumerate(dids)}
chunk_doc = np.array([dix[d] for d in docs])
# centroid per document
C = np.zeros((len(dids), E.shape[1]), np.float32); np.add.at(C, chunk_doc, E)
C /= np.linalg.norm(C, axis=1, keepdims=True)
def mm(x):
    lo, hi = min(x.values()), max(x.values())
    return {k: (v - lo) / (hi - lo) if hi > lo else 1.0 for k, v in x.items()}
def doc_max(pairs):
    out = {}
    for d, s in pairs:
        if d not in out or s > out[d]: out[d] = s
    return out
def run(alpha=0.5, gamma=0.0, third="title", depth=100, fold="after"):
    out = {}
    for qi, q in enumerate(qids):
        qv = Q[qi]; s = E @ qv; top = np.argsort(-s)[:depth]
        v = {int(ids[i]): float(s[i]) for i in top}
        b = {h.chunk_id: h.score for h in bm[q][:depth]}
        if fold == "after":
            vn, bn = mm(v), mm(b); chunk = {}
            for c in set(vn) | set(bn): chunk[c] = alpha * vn.get(c, 0) + (1 - alpha) * bn.get(c, 0)
            dscore = doc_max((chunk_doc[row_of[c]], x) for c, x in chunk.items())
        else:
            vd = mm(doc_max((chunk_doc[row_of[c]], x) for c, x in v.items()))
            bd = mm(doc_max((chunk_doc[row_of[c]], x) for c, x in b.items()))
            dscore = {d: alpha * vd.get(d, 0) + (1 - alpha) * bd.get(d, 0) for d in set(vd) | set(bd)}
        if gamma:
            M = T if third == "title" else C
            ts = M @ qv; tt = np.argsort(-ts)[:depth]
            tn = mm({int(i): float(ts[i]) for i in tt})
            dscore = {d: dscore.get(d, 0) + gamma * tn.get(d, 0) for d in set(dscore) | set(tn)}
        ranked = sorted(dscore, key=lambda d: -dscore[d])[:100]
        out[q] = [x for d in ranked for x in di[dids[d]]]
    return out
def show(label, **kw):
    r = run(**kw)
    a = evaluate(r, qrels); h = evaluate({q: r[q] for q in held}, {q: qrels[q] for q in held})
    print(f"{label:44s} all {a['ndcg@10']:.4f} R10 {a['recall@10']:.4f} R100 {a['recall@100']:.4f} | held {h['ndcg@10']:.4f}", flush=True)
# legs alone
for nm, M in (("title", T), ("centroid", C)):
    r = {}
    for qi, q in enumerate(qids):
        ts = M @ Q[qi]; r[q] = [x for d in np.argsort(-ts)[:100] for x in di[dids[d]]]
    print(nm, "alone", round(evaluate(r, qrels)["ndcg@10"], 4))
show("baseline after")
show("baseline before", fold="before")
for third in ("title", "centroid"):
    for fold in ("after", "before"):
        for g in (0.1, 0.2, 0.3, 0.5):
            show(f"{third} {fold} gamma={g}", third=third, fold=fold, gamma=g)
