"""Document-level fusion with other normalisations (z-score, max) and a second-chunk bonus, on the legs cached
by relevance_levers_study.py (/tmp/rel/legs.pkl). A study: not product code."""
import pickle, statistics, sys
sys.path.insert(0, "reports/relevance")  # run from the repository root, after relevance_levers_study.py
from relevance_levers_study import run_variant, fold_leg, DATASET
from rag_server.evaluation.beir import load_beir
from rag_server.evaluation.metrics import evaluate, fold_to_documents
from rag_server.retrieval.legs import LegHit
from rag_server.retrieval.fusion import convex
data = pickle.loads(open("/tmp/rel/legs.pkl","rb").read())
ds = load_beir(DATASET); qids = ds.test_query_ids(); qrels = {q: dict(ds.qrels[q]) for q in qids}
held = qids[1::2]; sub = lambda ids: {q: qrels[q] for q in ids}
cd, di = data["chunk_doc"], data["doc_ids"]
def docs_leg(hits, second):
    best = {}
    for h in hits:
        best.setdefault(cd[h.chunk_id], []).append(h.score)
    return {d: s[0] + second * (s[1] if len(s) > 1 else 0) for d, s in best.items()}
def norm(scores, how):
    vals = list(scores.values())
    if how == "minmax":
        lo, hi = min(vals), max(vals)
        return {k: (v-lo)/(hi-lo) if hi > lo else 1 for k, v in scores.items()}
    if how == "max":
        hi = max(vals); return {k: v/hi for k, v in scores.items()}
    if how == "z":
        m, sd = statistics.mean(vals), statistics.pstdev(vals) or 1
        return {k: (v-m)/sd for k, v in scores.items()}
def run(ids, depth=100, second=0.0, how="minmax", alpha=0.5, miss="zero"):
    r = {}
    for q in ids:
        b, v = data["legs"][q]
        nb, nv = norm(docs_leg(b[:depth], second), how), norm(docs_leg(v[:depth], second), how)
        lowb, lowv = (min(nb.values()), min(nv.values())) if miss == "min" else (0, 0)
        docs = set(nb) | set(nv)
        fused = sorted(docs, key=lambda d: -(alpha*nv.get(d, lowv) + (1-alpha)*nb.get(d, lowb)))[:100]
        r[q] = fold_to_documents([x for d in fused for x in di[d]])
    return r
def show(label, **kw):
    a = evaluate(run(qids, **kw), qrels); h = evaluate(run(held, **kw), sub(held))
    print(f"{label:45s} all {a['ndcg@10']:.4f} {a['recall@10']:.4f} {a['recall@100']:.4f} | held {h['ndcg@10']:.4f}")
show("before minmax (product)")
for s in (0.1, 0.2, 0.3): show(f"before minmax + {s}*second chunk", second=s)
show("before max-norm", how="max")
show("before z-score", how="z")
show("before z-score missing=min", how="z", miss="min")
for a in (0.4, 0.6): show(f"before z-score a={a}", how="z", alpha=a)
