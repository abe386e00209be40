"""How similar must a passage be to the question for chat to cite it? (a study, not product code)

For SciFact's 300 test queries and 40 everyday questions SciFact knows nothing about, the product's hybrid
search at chat's depth (top 5) on the eval database, and for every hit: its exact cosine with the query
(stored embedding, numpy), whether the BM25 leg matched it, and whether SciFact's qrels call its document
relevant. Then, per floor t: how many relevant hits a floor would drop, how many SciFact questions it
would leave with no source, and how many off-topic questions it would answer "nothing found".

Run from the repository root with PYTHONPATH=services after `rag-server eval --dataset <scifact>` built the
eval database (the same RAG_DATA_DIR): `python reports/relevance/chat_floor_study.py <scifact>`.
"""

import asyncio
import sys
from pathlib import Path

import numpy as np

from rag_server.config import Settings
from rag_server.evaluation.beir import load_beir
from rag_server.evaluation.runner import _document_ids, eval_database_name
from rag_server.infra.database import resolve_database_url, with_database
from rag_server.infra.runtime import open_runtime
from rag_server.retrieval.models import SearchRequest
from rag_server.retrieval.service import search

OFF_TOPIC = [
    "What time does the museum open on Sundays?",
    "How do I reset my router password?",
    "Best recipe for sourdough bread",
    "Who won the football world cup in 2014?",
    "How many vacation days do employees get per year?",
    "What is the capital of Australia?",
    "How do I change a flat bicycle tire?",
    "Which train goes from Paris to Lyon in the morning?",
    "How much does a monthly gym membership cost?",
    "What is the refund policy for online orders?",
    "How do I install Python on Windows?",
    "When is the next board meeting scheduled?",
    "What are the office opening hours in Berlin?",
    "How do I export my contacts from my phone?",
    "What is the best way to learn the guitar?",
    "Who wrote the novel Pride and Prejudice?",
    "How long should I boil an egg for a soft yolk?",
    "What is the password policy for new accounts?",
    "How do I file an expense report?",
    "What is the weather forecast for tomorrow?",
    "How do I connect a printer to the wifi network?",
    "What is the dress code for the annual party?",
    "How do I renew my passport?",
    "Which programming language should a beginner start with?",
    "What is the price of the premium subscription plan?",
    "How can I cancel my hotel reservation?",
    "How tall is the Eiffel Tower?",
    "What are the rules of chess castling?",
    "How do I paint a wooden fence?",
    "What is the shipping time to Canada?",
    "How do I configure two-factor authentication?",
    "Where can I park my car near the office?",
    "What is the maximum luggage weight on the flight?",
    "How do I make a pivot table in a spreadsheet?",
    "Who is the manager of the sales team?",
    "What movies are playing at the cinema tonight?",
    "How do I unsubscribe from the newsletter?",
    "What does the warranty cover for a broken screen?",
    "How many players are on a basketball team?",
    "What is the interest rate on a savings account?",
]
FLOORS = (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)


async def product_path(dataset: Path) -> None:
    """The product's own floor (SearchRequest.min_similarity: the next ranked take the places of hits
    below it), hybrid top 5 as chat asks: per floor, relevant hits among the sources, SciFact questions
    left with none, off-topic questions answered with none."""
    settings = Settings()
    ds = load_beir(dataset)
    url = with_database(resolve_database_url(settings), eval_database_name(dataset, settings))
    runtime_settings = settings.model_copy(update={"database_url": url})
    async with open_runtime(runtime_settings, migrate=True, load_embedder=True) as rt:
        beir_ids = await _document_ids(rt)
        asked = [(q, ds.queries[q], dict(ds.qrels[q])) for q in ds.test_query_ids()]
        print("| floor | relevant sources | SciFact questions with no source | off-topic questions with no source |")
        print("|---|---|---|---|")
        for floor in (None, *FLOORS[1:]):
            relevant = empty_on = empty_off = 0
            for _qid, text, qrels in asked:
                request = SearchRequest(
                    query=text, top_k=5, collections=["scifact"], min_similarity=floor
                )
                hits = (await search(rt, request)).results
                empty_on += not hits
                relevant += sum(
                    any(qrels.get(b, 0) > 0 for b in beir_ids[str(h.document_id)]) for h in hits
                )
            for text in OFF_TOPIC:
                request = SearchRequest(
                    query=text, top_k=5, collections=["scifact"], min_similarity=floor
                )
                empty_off += not (await search(rt, request)).results
            print(f"| {floor} | {relevant} | {empty_on} of {len(asked)} | {empty_off} of {len(OFF_TOPIC)} |")


async def collect(dataset: Path) -> list[dict[str, object]]:
    settings = Settings()
    ds = load_beir(dataset)
    url = with_database(resolve_database_url(settings), eval_database_name(dataset, settings))
    rows: list[dict[str, object]] = []
    runtime_settings = settings.model_copy(update={"database_url": url})
    async with open_runtime(runtime_settings, migrate=True, load_embedder=True) as rt:
        beir_ids = await _document_ids(rt)
        asked = [(q, ds.queries[q], dict(ds.qrels[q])) for q in ds.test_query_ids()]
        asked += [(f"off{i}", text, {}) for i, text in enumerate(OFF_TOPIC)]
        for qid, text, qrels in asked:
            request = SearchRequest(query=text, top_k=5, search_type="hybrid", collections=["scifact"])
            hits = (await search(rt, request)).results
            query = await rt.embedder.embed_query(text)
            stored = await rt.pool.fetch(
                "SELECT id, embedding::text AS e,"
                " to_tsvector('english', search_text) @@ plainto_tsquery('english', $2) AS all_terms"
                " FROM chunks WHERE id = ANY($1)",
                [h.chunk_id for h in hits],
                text,
            )
            vectors = {r["id"]: np.array(r["e"][1:-1].split(","), dtype=np.float32) for r in stored}
            all_terms = {r["id"]: bool(r["all_terms"]) for r in stored}
            for rank, hit in enumerate(hits, start=1):
                v = vectors[hit.chunk_id]
                rows.append(
                    {
                        "qid": qid,
                        "off_topic": qid.startswith("off"),
                        "rank": rank,
                        "cosine": float(v @ query / np.linalg.norm(v) / np.linalg.norm(query)),
                        "bm25": hit.bm25 is not None,
                        "all_terms": all_terms[hit.chunk_id],
                        "relevant": any(qrels.get(b, 0) > 0 for b in beir_ids[str(hit.document_id)]),
                    }
                )
    return rows


def report(rows: list[dict[str, object]]) -> None:
    on = [r for r in rows if not r["off_topic"]]
    off = [r for r in rows if r["off_topic"]]
    relevant = [r for r in on if r["relevant"]]
    print(f"SciFact: {len({r['qid'] for r in on})} queries, {len(on)} hits, {len(relevant)} relevant")
    print(f"off-topic: {len({r['qid'] for r in off})} queries, {len(off)} hits")
    for name, part in (("relevant", relevant), ("SciFact not relevant", [r for r in on if not r["relevant"]])):
        cos = np.array([r["cosine"] for r in part])
        print(f"cosine of {name} hits: p5 {np.percentile(cos, 5):.3f} p25 {np.percentile(cos, 25):.3f} "
              f"median {np.median(cos):.3f}")
    cos = np.array([r["cosine"] for r in off])
    top_off = np.array([r["cosine"] for r in off if r["rank"] == 1])
    print(f"cosine of off-topic hits: median {np.median(cos):.3f} p95 {np.percentile(cos, 95):.3f} "
          f"max {cos.max():.3f}; their best hit: median {np.median(top_off):.3f} max {top_off.max():.3f}")
    print(f"off-topic hits the BM25 leg matched: {sum(bool(r['bm25']) for r in off)} of {len(off)}")
    print(f"off-topic hits holding every word of their question: {sum(bool(r['all_terms']) for r in off)}")
    print()
    print("| floor | rule | relevant hits kept | SciFact queries left with no source | "
          "SciFact queries losing every relevant hit | off-topic queries with no source | "
          "off-topic hits kept |")
    print("|---|---|---|---|---|---|---|")
    for rule in ("cosine", "cosine or bm25", "cosine or every word"):
        for t in FLOORS:
            def kept(r: dict[str, object], t: float = t, rule: str = rule) -> bool:
                evidence = {"cosine": False, "cosine or bm25": r["bm25"], "cosine or every word": r["all_terms"]}
                return float(r["cosine"]) >= t or bool(evidence[rule])  # type: ignore[arg-type]

            def queries(part: list[dict[str, object]]) -> set[object]:
                return {r["qid"] for r in part}

            empty_on = queries(on) - queries([r for r in on if kept(r)])
            lost = queries(relevant) - queries([r for r in relevant if kept(r)])
            empty_off = queries(off) - queries([r for r in off if kept(r)])
            print(f"| {t} | {rule} | {sum(kept(r) for r in relevant)} of {len(relevant)} | "
                  f"{len(empty_on)} | {len(lost)} | {len(empty_off)} of {len(queries(off))} | "
                  f"{sum(kept(r) for r in off)} of {len(off)} |")


if __name__ == "__main__":
    report(asyncio.run(collect(Path(sys.argv[1]))))
    print()
    asyncio.run(product_path(Path(sys.argv[1])))
