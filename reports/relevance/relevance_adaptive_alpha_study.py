"""A fusion weight per query (issue 16, 2026-12-06). A study, not product code: run from the repository root
with PYTHONPATH=services and RAG_DATA_DIR holding the SciFact eval database (`rag-server eval` built it).
Both legs once per test query at depth 400 through retrieval.service; then offline, the product's fusion
(convex per chunk over 50 candidates a leg, folded after) at alpha 0.0..1.0 per query: the best fixed alpha,
the oracle (each query its best alpha), how much simple per-query features say about which leg wins, and a
ridge regression from them to the best alpha, trained on one half of the queries and scored on the other."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from rag_server.collections.store import resolve_ids
from rag_server.config import Settings
from rag_server.evaluation.beir import load_beir
from rag_server.evaluation.metrics import evaluate, fold_to_documents
from rag_server.evaluation.runner import _document_ids, eval_database_name
from rag_server.infra.database import resolve_database_url, with_database
from rag_server.infra.runtime import open_runtime
from rag_server.retrieval.fusion import convex
from rag_server.retrieval.service import bm25_search, vector_search

DATASET = Path("/work/shared/datasets/scifact")
ALPHAS = [i / 10 for i in range(11)]


async def legs() -> tuple[dict, dict, dict]:
    settings = Settings()
    url = with_database(resolve_database_url(settings), eval_database_name(DATASET, settings))
    async with open_runtime(settings.model_copy(update={"database_url": url}), migrate=False) as rt:
        scope = await resolve_ids(rt.pool, ["scifact"])
        doc_ids = await _document_ids(rt)
        chunk_doc = {
            int(r["id"]): str(r["document_id"])
            for r in await rt.pool.fetch("SELECT id, document_id FROM chunks")
        }
        ds = load_beir(DATASET)
        got = {}
        for q in ds.test_query_ids():
            got[q] = (
                await bm25_search(rt, ds.queries[q], 400, None, scope),
                await vector_search(rt, ds.queries[q], 400, None, None, scope),
            )
    return got, chunk_doc, doc_ids


def main() -> None:
    got, chunk_doc, doc_ids = asyncio.run(legs())
    ds = load_beir(DATASET)
    qids = ds.test_query_ids()

    def documents(hits) -> dict[str, float]:
        best: dict[str, float] = {}
        for h in hits:
            best.setdefault(chunk_doc[h.chunk_id], h.score)
        return best

    def ndcg(q: str, alpha: float) -> float:
        bm25, vector = got[q]
        ranked = list(documents(convex(vector[:50], bm25[:50], alpha)))[:100]
        run = fold_to_documents([x for d in ranked for x in doc_ids[d]])
        return evaluate({q: run}, {q: dict(ds.qrels[q])})["ndcg@10"]

    per = np.array([[ndcg(q, a) for a in ALPHAS] for q in qids])
    print("fixed alpha 0.0..1.0:", " ".join(f"{x:.4f}" for x in per.mean(0)))
    print(f"oracle (each query its best alpha): {per.max(1).mean():.4f}")
    features = []
    for q in qids:
        bm25, vector = got[q]
        v, b = sorted(documents(vector[:50]).values())[::-1], sorted(documents(bm25[:50]).values())[::-1]
        top_v, top_b = documents(vector[:50]), documents(bm25[:50])
        both = set(sorted(top_v, key=top_v.get)[-10:]) & set(sorted(top_b, key=top_b.get)[-10:])
        features.append(
            [
                len(ds.queries[q].split()),
                v[0],
                v[0] - v[min(9, len(v) - 1)],
                (b[0] - b[min(9, len(b) - 1)]) / b[0],
                b[0],
                len(both),
            ]
        )
    x = np.array(features, dtype=float)
    vector_wins = per[:, 8] - per[:, 2]
    names = [
        "query words",
        "vector top",
        "vector top-10th gap",
        "bm25 relative gap",
        "bm25 top",
        "top-10 overlap",
    ]
    for name, column in zip(names, x.T, strict=True):
        print(f"corr({name}, alpha 0.8 minus 0.2): {np.corrcoef(column, vector_wins)[0, 1]:+.3f}")
    x = np.hstack([(x - x.mean(0)) / x.std(0), np.ones((len(x), 1))])
    halves = [np.arange(len(qids)) % 2 == 0, np.arange(len(qids)) % 2 == 1]
    for lam in (1, 10, 100):
        scores = []
        for train in halves:
            test = ~train
            best = np.array(
                [np.mean([a for a, s in zip(ALPHAS, p, strict=True) if s == p.max()]) for p in per[train]]
            )
            w = np.linalg.solve(x[train].T @ x[train] + lam * np.eye(x.shape[1]), x[train].T @ best)
            pick = np.clip(np.round(x[test] @ w * 10), 0, 10).astype(int)
            chosen, fixed = per[test][np.arange(test.sum()), pick].mean(), per[test][:, 5].mean()
            scores.append(f"{chosen:.4f} (fixed 0.5: {fixed:.4f})")
        print(f"ridge lambda {lam}: held-out halves {' / '.join(scores)}")


if __name__ == "__main__":
    main()
