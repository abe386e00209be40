"""Exact top-k for the native BM25 engine (the tables of migrations 0002 and 0003), in a few set-based
statements. The collection scope is read from the postings themselves (0003 copied each chunk's
collection into them): a scoped search joins `chunks` only for the other filters.

Okapi BM25 (docs/decisions/0003-native-bm25.md) regrouped per term, for the distinct query lexemes t
found in chunk d:

    score(d) = sum over t of  w(t) * tf / (tf + c0 + c1 * doc_len)
    w(t) = idf(t) * (k1 + 1),  c0 = k1 (1 - b),  c1 = k1 b / avgdl

A term adds less than w(t) to any chunk: w(t) is its upper bound.

Fixed-point sums: every contribution is rounded to an integer at a per-query power-of-two scale (the
largest that keeps w(t) * scale inside int4) and the integers are summed. Integer sums do not depend
on the order of the additions, so every statement below gives the same bits for the same chunk and
chunks with equal scores tie exactly (broken by chunk id). The rounding costs at most 0.5/scale per
term: below 1e-8 with the default k1.

Plan, inside one REPEATABLE READ snapshot (statistics and postings agree while workers write):
1. The query's terms with their df, N and total length, and the pack's watermark (migration 0014).
2. A pack, and no filter but the collection scope: bm25_packed scores every posting in the server
   (decision 0014). Otherwise the statements below, over bm25_postings:
3. Few postings in all (or one term): the full statement sums every posting and keeps the top k.
4. Otherwise a seeded MaxScore, exact by construction:
   a. seed: the rarest terms, up to SEED_POSTINGS postings (or N / SEED_CORPUS_SHARE), are summed;
      their SEED_DEPTH * k best chunks get full scores (the other terms looked up for those chunk ids
      only). theta, the k-th best of these full scores, is a lower bound of the true k-th score.
   b. split, terms by w descending: E is a prefix whose remainder R (the sum of the other terms'
      bounds) is below theta, so a chunk without an E term cannot be in the top k. Among those
      prefixes (and the full statement) the cheapest by an estimate: E's postings + the candidates'
      lookups (split_cost). A short E sums fewer postings but leaves a low bar, theta - R, so more
      chunks to look up; the candidates are estimated from the dfs (terms independent, a term adding
      about 0.45 w(t) at tf = 1). The estimate only chooses among exact plans.
   c. E's postings are summed; chunks whose partial reaches theta - R get the remaining terms by
      looking their ids up in each term's postings (one index scan per term, `= ANY(sorted ids)`).
      Every true top-k chunk passes that filter, so their top k is the answer.
Summing postings is what costs (~0.35 us each at 1M chunks, most of a query); lookups ~0.8 us per id
and term: step 4 trades the long posting lists of common terms for lookups of the chunks that can
still win. Sums are hash aggregates with a group per chunk: a statement summing many postings gets
work_mem raised for it, or the aggregate spills to disk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from rag_server.retrieval.bm25_packed import PROBED_UNPACKED_MAX, Pack, Weights, packed_top_k
from rag_server.retrieval.filters import FilterSQL, build_filters
from rag_server.retrieval.legs import LegHit
from rag_server.retrieval.models import SearchFilters

# Below this many postings in all, the full statement is about as fast as the seed alone.
FULL_MAX_POSTINGS = 10_000
# Postings the seed may sum: enough for a good theta, few enough to be cheap. A fixed budget covers a
# shrinking share of each term's postings as the corpus grows: theta weakens, more chunks stay
# candidates and more queries fall back to the full sum (at 300k synthetic chunks median candidates
# 279 -> 1,241 from 100k, full sums 13% -> 25% of queries). So the budget also grows with N:
# N / SEED_CORPUS_SHARE postings (backend CPU per query at 300k: 77.8 -> 47.7 ms; at 1M 256 -> 237 ms).
SEED_POSTINGS = 5_000
SEED_CORPUS_SHARE = 20
# The seed's best chunks by its own terms that get full scores: SEED_DEPTH * k of them; theta is the
# k-th best of those. The top k by the rarest terms alone are often not the top k by full score: at
# 1M synthetic chunks, 50 rather than 10 (k = 10) raise theta by ~10% (toward the true k-th score)
# for ~1 ms of lookups.
SEED_DEPTH = 5
# The split's cost model, in units of one posting summed: a candidate costs LOOKUP_COST per term
# looked up (its id probed in that term's postings), plus one for being kept and sorted. 1, 2 and 4
# measured the same at 300k and 1M synthetic chunks (within 4%): the choice is not sensitive to it.
LOOKUP_COST = 2.0
# The candidate estimate: a chunk holds each essential term independently (p = df / N) and then adds
# one of these shares of w(t) (share, probability): tf = 1 at about the average length gives ~0.45.
SHARES = ((0.45, 0.75), (0.62, 0.25))
ESTIMATE_BINS = 32
# The estimate costs O(terms^2 * bins) in Python, on the event loop: a pasted text of hundreds of terms
# would block it for most of a second. Past COSTED_TERMS terms the split is the earlier fixed rule: the
# shortest prefix whose remaining bound is below LONG_QUERY_ALPHA * theta.
COSTED_TERMS = 24
LONG_QUERY_ALPHA = 0.5
# A statement summing many postings groups about as many chunks in a hash aggregate. Past work_mem
# (4MB by default, times hash_mem_multiplier) it spills to disk in batches: at 1M synthetic chunks,
# 230k postings into 206k groups ran in 5 batches. For such statements work_mem is raised, in the
# transaction and for that statement only, to GROUP_BYTES per group (a chunk: at most N of them) and at
# most WORK_MEM_MAX_KB; hash tables may use hash_mem_multiplier (2) times that, per concurrent query.
GROUP_BYTES = 64
WORK_MEM_MAX_KB = 64 * 1024

INT4_MAX = 2**31 - 1

TERMS_SQL = f"""
    SELECT bt.term, bt.df, s.n_docs, s.total_len,
           k.watermark AS packed_upto, k.narrow AS packed_narrow, k.deleted AS packed_deleted,
           k.watermark IS NOT NULL AND (SELECT count(*) FROM (
               SELECT 1 FROM bm25_unpacked LIMIT {PROBED_UNPACKED_MAX + 1}) u) > {PROBED_UNPACKED_MAX}
               AS packed_many_unpacked
    FROM unnest(to_tsvector('english', rag_bm25_text($1::text))) AS q  -- each lexeme once; CJK split (0025)
    JOIN bm25_terms bt ON bt.term = q.lexeme
    CROSS JOIN bm25_stats s
    LEFT JOIN bm25_pack k ON true  -- migration 0014's one row, when a pack exists
    WHERE s.id = 1 AND bt.df > 0
"""


@dataclass(frozen=True)
class QueryTerms:
    """The query's terms, best bound first, and the constants every statement binds."""

    terms: list[str]
    weights: list[float]  # w(t) = idf * (k1 + 1)
    dfs: list[int]
    c0: float
    c1: float
    scale: float  # fixed point: contribution -> int4(contribution * scale)
    n_docs: int = 0  # N: the seed's budget grows with it

    @classmethod
    def from_rows(cls, rows: list[Any], k1: float, b: float) -> QueryTerms:
        n_docs, total_len = int(rows[0]["n_docs"]), int(rows[0]["total_len"])
        entries = sorted(
            (
                (math.log(1.0 + (n_docs - r["df"] + 0.5) / (r["df"] + 0.5)) * (k1 + 1.0), r["term"], r["df"])
                for r in rows
            ),
            key=lambda e: (-e[0], e[1]),
        )
        max_w = max(entries[0][0], 1e-9)
        return cls(
            terms=[e[1] for e in entries],
            weights=[e[0] for e in entries],
            dfs=[int(e[2]) for e in entries],
            c0=k1 * (1.0 - b),
            c1=k1 * b * max(n_docs, 1) / max(total_len, 1),
            scale=2.0 ** math.floor(math.log2(INT4_MAX / max_w)),
            n_docs=n_docs,
        )

    def bound(self, first: int) -> int:
        """Scaled upper bound of what the terms from index `first` on can add to any chunk."""
        # +1 per term: the cast to int4 rounds, so a scaled contribution can reach round(w * scale).
        return sum(math.ceil(w * self.scale) + 1 for w in self.weights[first:])


# Parameters shared by every statement: $1 terms, $2 weights, $3 flags (seed or essential terms),
# $4 c0, $5 c1, $6 scale, $7 limit. Statement-specific ones follow, then the filters.
TERMS_CTE = """t AS MATERIALIZED (
    SELECT * FROM unnest($1::text[], $2::float8[], $3::bool[]) AS t (term, w, flag)
)"""
CONTRIBUTION = "(t.w * p.tf / (p.tf + $4::float8 + $5::float8 * p.doc_len) * $6::float8)::int4"


def _add_other_terms(source: str) -> str:
    """CTEs `ids`, `rest`, `scored`: `source` (chunk_id, partial) plus the unflagged terms, by lookups."""
    return f"""
        ids AS (SELECT array_agg(chunk_id ORDER BY chunk_id) AS a FROM {source}),
        rest AS (
            SELECT p.chunk_id, sum({CONTRIBUTION}) AS s
            FROM t JOIN bm25_postings p
                ON p.term = t.term AND p.chunk_id = ANY ((SELECT a FROM ids)::bigint[])
            WHERE NOT t.flag
            GROUP BY p.chunk_id
        ),
        scored AS (
            SELECT s.chunk_id, s.partial + coalesce(r.s, 0) AS score
            FROM {source} s LEFT JOIN rest r USING (chunk_id)
        )"""


def _flagged_sums(filters: FilterSQL, tail: str) -> str:
    """Per chunk, the sum over the flagged terms' postings (column `partial`), then `tail`."""
    return f"""
            SELECT p.chunk_id, sum({CONTRIBUTION}) AS partial
            FROM t JOIN bm25_postings p ON p.term = t.term
            {filters.joins("p.chunk_id")}
            WHERE t.flag {filters.where("AND", collection_column="p.collection_id")}
            GROUP BY p.chunk_id
            {tail}"""


def full_sql(filters: FilterSQL) -> str:
    """Every posting of every term (all flagged). Filters from $8."""
    return f"""
        WITH {TERMS_CTE}
        SELECT chunk_id, partial AS score FROM ({_flagged_sums(filters, "")}) AS sums
        ORDER BY score DESC, chunk_id
        LIMIT $7
    """


def seed_sql(filters: FilterSQL) -> str:
    """theta: the $7-th best full score of the $7 * $8 best chunks by the flagged terms. Filters from $9."""
    best = _flagged_sums(filters, "ORDER BY partial DESC, p.chunk_id LIMIT $7 * $8::int")
    return f"""
        WITH {TERMS_CTE},
        seed AS MATERIALIZED ({best}),
        {_add_other_terms("seed")}
        SELECT score FROM scored ORDER BY score DESC OFFSET $7 - 1 LIMIT 1
    """


def maxscore_sql(filters: FilterSQL) -> str:
    """Top $7 among chunks whose flagged-term partial reaches $8 (theta - R). Filters from $9."""
    return f"""
        WITH {TERMS_CTE},
        cand AS MATERIALIZED ({_flagged_sums(filters, f"HAVING sum({CONTRIBUTION}) >= $8::int8")}),
        {_add_other_terms("cand")}
        SELECT chunk_id, score FROM scored ORDER BY score DESC, chunk_id LIMIT $7
    """


def seed_size(q: QueryTerms) -> int:
    """How many of the best-bound terms the seed sums: at least one, at most its budget of postings
    (SEED_POSTINGS, or N / SEED_CORPUS_SHARE in a larger corpus)."""
    budget = max(SEED_POSTINGS, q.n_docs // SEED_CORPUS_SHARE)
    size, postings = 1, q.dfs[0]
    while size < len(q.dfs) and postings + q.dfs[size] <= budget:
        postings += q.dfs[size]
        size += 1
    return size


def estimated_candidates(q: QueryTerms, essential: int, threshold: int) -> float:
    """About how many chunks the first `essential` terms give a partial score of at least `threshold`
    (scaled): terms present independently, each adding one of SHARES of its bound. Only a cost
    estimate: it never decides what is returned."""
    if threshold <= 0:
        return float(q.n_docs)
    # dist[i]: probability that a chunk's partial is about i / ESTIMATE_BINS of the threshold (the
    # last bin: at least the threshold).
    dist = [1.0] + [0.0] * ESTIMATE_BINS
    for w, df in zip(q.weights[:essential], q.dfs[:essential], strict=True):
        present = min(df / max(q.n_docs, 1), 1.0)
        new = [x * (1.0 - present) for x in dist]
        for share, chance in SHARES:
            step = math.ceil(share * w * q.scale / threshold * ESTIMATE_BINS)
            for i, x in enumerate(dist):
                new[min(i + step, ESTIMATE_BINS)] += x * present * chance
        dist = new
    return q.n_docs * dist[ESTIMATE_BINS]


def split_cost(q: QueryTerms, essential: int, theta: int) -> float:
    """Postings summed plus the estimated candidates' lookups, in postings, for E = the first
    `essential` terms (all of them: the full statement)."""
    postings = sum(q.dfs[:essential])
    if essential == len(q.terms):
        return float(postings)
    candidates = estimated_candidates(q, essential, theta - q.bound(essential))
    return postings + candidates * (1.0 + LOOKUP_COST * (len(q.terms) - essential))


def essential_size(q: QueryTerms, theta: int) -> int:
    """The cheapest E (by split_cost) among the prefixes whose remaining bound stays below theta, so
    that a chunk without an E term cannot reach the top k. len(q.terms): the full statement."""
    exact = [size for size in range(1, len(q.terms)) if q.bound(size) < theta - 1]
    if len(q.terms) > COSTED_TERMS:
        bar = min(LONG_QUERY_ALPHA * theta, theta - 1)
        return next((size for size in exact if q.bound(size) < bar), len(q.terms))
    return min([*exact, len(q.terms)], key=lambda size: (split_cost(q, size, theta), size))


async def native_top_k(
    conn: asyncpg.Connection,
    query: str,
    top_k: int,
    filters: SearchFilters | None,
    k1: float,
    b: float,
    prune: bool = True,
    collections: Sequence[UUID] | None = None,
) -> list[LegHit]:
    """The exact BM25 top_k, best first, among chunks passing the filters and the collection scope.
    Call inside a REPEATABLE READ transaction.

    `prune=False` always runs the full statement (tests compare it with the pack and with MaxScore).
    """
    rows = await conn.fetch(TERMS_SQL, query)
    if not rows:
        return []
    q = QueryTerms.from_rows(rows, k1, b)
    n_terms = len(q.terms)
    # Migration 0014's pack, when there is one and no filter beyond the collection scope asks for the
    # statements below (they join chunks and documents per posting).
    watermark = rows[0]["packed_upto"]
    if prune and watermark is not None and not build_filters(filters, first_param=1).clauses:
        weights = Weights(q.terms, q.weights, q.c0, q.c1, q.scale)
        first = rows[0]
        pack = Pack(
            watermark, first["packed_narrow"], first["packed_deleted"] > 0, first["packed_many_unpacked"]
        )
        return await packed_top_k(conn, weights, sum(q.dfs), top_k, pack, collections)

    def bind(flagged: int, *extra: Any) -> list[Any]:
        flags = [i < flagged for i in range(n_terms)]
        return [q.terms, q.weights, flags, q.c0, q.c1, q.scale, top_k, *extra]

    # Filter parameters follow the shared ones ($8 on), or the seed's size or maxscore threshold ($9 on).
    from_8 = build_filters(filters, first_param=8, collections=collections)
    from_9 = build_filters(filters, first_param=9, collections=collections)

    async def fetch(postings: int, sql: str, args: list[Any]) -> list[Any]:
        return await _fetch(conn, min(postings, q.n_docs), sql, args)

    async def full() -> list[LegHit]:
        return _hits(await fetch(sum(q.dfs), full_sql(from_8), bind(n_terms, *from_8.params)), q.scale)

    seeded = seed_size(q)
    if not prune or sum(q.dfs) <= FULL_MAX_POSTINGS or seeded == n_terms or sum(q.dfs[:seeded]) < top_k:
        return await full()
    seed = await fetch(sum(q.dfs[:seeded]), seed_sql(from_9), bind(seeded, SEED_DEPTH, *from_9.params))
    if not seed:  # fewer than top_k chunks among the seed's
        return await full()
    theta = seed[0]["score"]
    essential = essential_size(q, theta)
    if essential == n_terms:
        return await full()
    args = bind(essential, theta - q.bound(essential), *from_9.params)
    return _hits(await fetch(sum(q.dfs[:essential]), maxscore_sql(from_9), args), q.scale)


RAISE_WORK_MEM_SQL = """
    SELECT current_setting('work_mem') AS old, set_config('work_mem',
        greatest($1::int8, pg_size_bytes(current_setting('work_mem')) / 1024)::text || 'kB', true)
"""


async def _fetch(conn: asyncpg.Connection, groups: int, sql: str, args: list[Any]) -> list[Any]:
    """conn.fetch, with work_mem raised for a statement that groups about `groups` chunks. No restore
    after an error: the transaction is aborted, and its end undoes the setting."""
    need_kb = min(groups * GROUP_BYTES // 1024, WORK_MEM_MAX_KB)
    # Against PostgreSQL's default (4MB), not the current value: reading it would cost a round trip
    # for every statement, and the raise never lowers a higher setting (greatest()).
    if need_kb <= 4096:
        return await conn.fetch(sql, *args)
    old = await conn.fetchval(RAISE_WORK_MEM_SQL, need_kb)
    rows = await conn.fetch(sql, *args)
    await conn.execute("SELECT set_config('work_mem', $1, true)", old)
    return rows


def _hits(rows: list[Any], scale: float) -> list[LegHit]:
    return [LegHit(int(r["chunk_id"]), r["score"] / scale) for r in rows]
