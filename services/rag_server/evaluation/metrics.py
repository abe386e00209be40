"""Ranking metrics as trec_eval computes them, plus latency percentiles.

Conventions (stated because published numbers differ on them):
- nDCG@k uses linear gains (gain = qrels grade) and log2(rank + 1) discounts; the ideal ranking is
  the judged documents sorted by grade. This is trec_eval's ndcg_cut and what BEIR reports.
- A document is relevant when its grade is > 0 (grade 0 rows are "judged not relevant").
- Averages run over every query that has at least one relevant document; a query the system
  returned nothing for scores 0 (it is not dropped, unlike plain trec_eval without -c).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Sequence[str]]  # query id -> ranked document ids, best first


def dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    ideal = dcg(sorted((g for g in judged.values() if g > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    gains = [float(max(judged.get(doc, 0), 0)) for doc in ranking[:k]]
    return dcg(gains) / ideal


def recall_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    relevant = {doc for doc, grade in judged.items() if grade > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    for rank, doc in enumerate(ranking[:k], start=1):
        if judged.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def evaluate(run: Run, qrels: Qrels) -> dict[str, float]:
    """Mean nDCG@10, Recall@10, Recall@100 and MRR@10 over the queries with a relevant document."""
    totals = {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    scored = 0
    for qid, judged in qrels.items():
        if not any(grade > 0 for grade in judged.values()):
            continue  # nothing to find: trec_eval skips such queries too
        ranking = _dedupe(run.get(qid, ()))
        totals["ndcg@10"] += ndcg_at_k(ranking, judged, 10)
        totals["recall@10"] += recall_at_k(ranking, judged, 10)
        totals["recall@100"] += recall_at_k(ranking, judged, 100)
        totals["mrr@10"] += mrr_at_k(ranking, judged, 10)
        scored += 1
    if scored == 0:
        raise ValueError("no query has a relevant document in the qrels")
    return {name: value / scored for name, value in totals.items()}


def _dedupe(ranking: Sequence[str]) -> list[str]:
    # A document counted twice would inflate DCG; keep its best (first) position.
    seen: set[str] = set()
    out: list[str] = []
    for doc in ranking:
        if doc not in seen:
            seen.add(doc)
            out.append(doc)
    return out


def fold_to_documents(chunk_doc_ids: Sequence[str]) -> list[str]:
    """Chunk hits (best first) -> documents ranked by their best chunk."""
    return _dedupe(chunk_doc_ids)


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float]:
    if not samples_ms:
        return {"p50": 0.0, "p95": 0.0}
    arr = np.asarray(samples_ms, dtype=np.float64)
    return {"p50": round(float(np.percentile(arr, 50)), 2), "p95": round(float(np.percentile(arr, 95)), 2)}


def percentiles(samples_ms: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    if not samples_ms:
        return {f"p{p}": 0.0 for p in points}
    arr = np.asarray(samples_ms, dtype=np.float64)
    return {f"p{p}": round(float(np.percentile(arr, p)), 2) for p in points}
