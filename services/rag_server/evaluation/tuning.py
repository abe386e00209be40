"""`rag-server eval --tune`: the convex weight (alpha) that ranks a collection's labelled queries best.

A grid over alpha, nDCG@10 of the hybrid search each alpha gives (through `retrieval.service.search`
with the request's `alpha`, so exactly what /search would return), the best one written to the
collection (`collections.hybrid_alpha`): later searches of it use it when they give no alpha.

`--holdout F` keeps a fraction of the queries out of the tuning, spread evenly over them (F = 0.5: every
second query); the modes are then scored on those alone, so the reported numbers are not measured on
the queries the weight was chosen with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rag_server.collections.store import get_collection, set_hybrid_alpha
from rag_server.evaluation.metrics import evaluate, fold_to_documents
from rag_server.infra.runtime import Runtime
from rag_server.retrieval.models import GroupBy, SearchRequest
from rag_server.retrieval.service import search

GRID = tuple(round(0.1 * i, 1) for i in range(11))
Queries = Sequence[tuple[str, str]]


def split_queries(queries: Queries, holdout: float) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(tuning queries, held-out queries): query i is held out when floor((i + 1) F) > floor(i F), which
    spreads them evenly and keeps the split the same from run to run."""
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"--holdout must be in [0, 1), got {holdout}")
    tune: list[tuple[str, str]] = []
    held: list[tuple[str, str]] = []
    for i, query in enumerate(queries):
        (held if int((i + 1) * holdout) > int(i * holdout) else tune).append(query)
    return tune, held


def best_alpha(scores: dict[float, float], default: float) -> float:
    """The highest score; among equal ones the alpha nearest the default (the least surprising)."""
    return max(scores, key=lambda a: (round(scores[a], 12), -round(abs(a - default), 9), -a))


async def tune_alpha(
    runtime: Runtime,
    queries: Queries,
    qrels: dict[str, dict[str, int]],
    doc_ids: dict[str, list[str]],
    collection: str,
    group_by: GroupBy,
    top_k: int = 100,
) -> dict[str, Any]:
    """Grid search of alpha on `queries`, then the best one written to `collection`."""
    if not queries:
        raise ValueError("--tune needs at least one query to tune on (lower --holdout)")
    judged = {qid: qrels[qid] for qid, _ in queries}
    scores: dict[float, float] = {}
    for alpha in GRID:
        run: dict[str, list[str]] = {}
        for qid, text in queries:
            request = SearchRequest(
                query=text,
                top_k=top_k,
                search_type="hybrid",
                fusion="convex",
                alpha=alpha,
                collections=[collection],
                group_by=group_by,
            )
            hits = (await search(runtime, request)).results
            run[qid] = fold_to_documents([beir for h in hits for beir in doc_ids[str(h.document_id)]])
        scores[alpha] = evaluate(run, judged)["ndcg@10"]
    previous = (await get_collection(runtime.pool, collection)).hybrid_alpha
    chosen = best_alpha(scores, runtime.settings.hybrid_alpha)
    await set_hybrid_alpha(runtime.pool, collection, chosen)
    return {
        "alpha": chosen,
        "previous_alpha": previous,
        "metric": "ndcg@10",
        "tune_queries": len(queries),
        "grid": {str(a): round(s, 6) for a, s in scores.items()},
    }
