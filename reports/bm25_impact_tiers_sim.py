"""Would impact-ordered postings (an index on (term, tf, doc_len), scanned only above a per-term bar) cut
the native BM25 top-k's work at 1M chunks? A simulation in Python over each query's real postings, not
product code (reports/bench-bm25-cost-split.md). Usage from the repository root, with the bench cluster up:
    .venv/bin/python reports/bm25_impact_tiers_sim.py <bench database> <queries>
Cost units as in bm25_native.split_cost: postings read + candidates * (1 + LOOKUP_COST * terms looked up).
A chunk scoring at least theta must have some term t with contribution >= tau_t when the tau_t sum to
theta - R (R: the bound of the terms left out); the best such split per query is searched."""

import asyncio
import json
import statistics
import sys

import asyncpg

from rag_server.retrieval import bm25_native as bn

DSN = "postgresql://postgres@/%s?host=/work/bench-data/pg" % sys.argv[1]  # this machine's bench cluster
K1, B, K = 1.2, 0.75, 10


async def main():
    conn = await asyncpg.connect(DSN)
    qs = [json.loads(line)["text"] for line in open("/work/shared/datasets/scifact/queries.jsonl")][
        : int(sys.argv[2])
    ]
    out = []
    for text in qs:
        rows = await conn.fetch(bn.TERMS_SQL, text)
        if not rows:
            continue
        q = bn.QueryTerms.from_rows(rows, K1, B)
        post = await conn.fetch(
            "select term, chunk_id, tf, doc_len from bm25_postings where term = any($1)", q.terms
        )
        idx = {t: i for i, t in enumerate(q.terms)}
        contrib = [dict() for _ in q.terms]
        for r in post:
            i = idx[r["term"]]
            c = int(q.weights[i] * r["tf"] / (r["tf"] + q.c0 + q.c1 * r["doc_len"]) * q.scale + 0.5)
            contrib[i][r["chunk_id"]] = c
        score = {}
        for d in contrib:
            for cid, c in d.items():
                score[cid] = score.get(cid, 0) + c
        top = sorted(score.values(), reverse=True)
        if len(top) < K:
            continue
        total = sum(q.dfs)
        # seed theta
        seeded = bn.seed_size(q)
        if total <= bn.FULL_MAX_POSTINGS or seeded == len(q.terms):
            out.append((total, total, total, total))
            continue
        sp = {}
        for i in range(seeded):
            for cid, c in contrib[i].items():
                sp[cid] = sp.get(cid, 0) + c
        best = sorted(sp, key=lambda c: (-sp[c], c))[: K * bn.SEED_DEPTH]
        full = sorted((score[c] for c in best), reverse=True)
        theta = full[K - 1] if len(full) >= K else 0
        seedcost = sum(q.dfs[:seeded]) + len(best) * bn.LOOKUP_COST * (len(q.terms) - seeded)
        e = bn.essential_size(q, theta)
        if e == len(q.terms):
            cur = total
        else:
            bar = theta - q.bound(e)
            partial = {}
            for i in range(e):
                for cid, c in contrib[i].items():
                    partial[cid] = partial.get(cid, 0) + c
            cand = sum(1 for v in partial.values() if v >= bar)
            cur = sum(q.dfs[:e]) + cand * (1 + bn.LOOKUP_COST * (len(q.terms) - e))
        # impact bars: E = the first e2 terms, each with tau = (theta - R) * w / W_E; the other terms get no
        # bar (they produce no candidates; their bound R is subtracted). Candidates need every term looked up
        # but the one they were found in.
        best_t = None
        for e2 in range(1, len(q.terms) + 1):
            R = q.bound(e2) if e2 < len(q.terms) else 0
            if R >= theta:
                continue
            WE = sum(q.weights[:e2]) * q.scale
            lam = (theta - R) / WE
            cands = set()
            scanned = 0
            for i in range(e2):
                tau = lam * q.weights[i] * q.scale
                hits = [cid for cid, c in contrib[i].items() if c >= tau]
                scanned += len(hits)
                cands.update(hits)
            cost = scanned + len(cands) * (1 + bn.LOOKUP_COST * (len(q.terms) - 1))
            if best_t is None or cost < best_t[0]:
                best_t = (cost, e2, lam, len(cands))
        if best_t is None:  # theta below every remaining bound: no exact bar split exists
            continue
        out.append((total, cur + seedcost, best_t[0] + seedcost, best_t))
        print(
            f"{total:8d} cur={cur + seedcost:8.0f} tier={best_t[0] + seedcost:8.0f} e={best_t[1]} lam={best_t[2]:.2f} cands={best_t[3]} nterms={len(q.terms)}",
            flush=True,
        )
    print(
        "median total",
        statistics.median(o[0] for o in out),
        "cur",
        statistics.median(o[1] for o in out),
        "tier",
        statistics.median(o[2] for o in out),
    )
    print(
        "mean total",
        statistics.mean(o[0] for o in out),
        "cur",
        statistics.mean(o[1] for o in out),
        "tier",
        statistics.mean(o[2] for o in out),
    )


asyncio.run(main())
