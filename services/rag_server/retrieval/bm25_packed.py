"""The native BM25 top-k over the pack (migration 0014, docs/decisions/0014-packed-postings.md).

One statement brings, for the query's terms, the pack's rows (each term's postings as byte arrays, per
collection in scope) and the postings the pack does not hold: chunks above its watermark (one index
range per term) and chunks written at or below it after it (bm25_unpacked, whose packed entries are
stale and masked). Every posting is then scored and summed with numpy, no pruning: a posting costs
~30-55 ns here against ~1 us in PostgreSQL's executor (reports/bench-bm25-packed.md).

The same fixed point as bm25_native's statements (a contribution rounded to an integer at the
query's scale, then summed), computed in the same order of float operations: scores and ties are
bit-for-bit those of the SQL path. Chunks deleted after the pack are still in it, so when any was
(migration 0016's count) the best ones are checked against `chunks` (under the caller's row-level
security) and the list extended when some are gone. Only the collection scope is applied here: other
filters go to bm25_native's statements.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np

from rag_server.retrieval.legs import LegHit

# Scoring this many postings or more goes to a thread (~5 ms of numpy here), fewer stay on the event
# loop: the hand-off cost ~1.3 ms of CPU per query at 100k chunks (3.8 -> 5.1 ms in the process, wall
# p50 6.7-7.9 -> 9.1-11.3 ms; reports/bench-bm25-packed.md), a third of the scoring itself.
THREAD_POSTINGS = 100_000
# Chunk ids per block of the dense sums, whose maxima bound where the best chunks lie (Totals.best).
BLOCK = 1024


# numpy's dtypes of the packed arrays: (chunk ids, tfs and lengths), big-endian.
WIDE = (">i8", ">i4")
NARROW = (">i4", ">i2")


def packed_lists(p: str, narrow: bool = False) -> str:
    """The packed format, as aggregates over bm25_postings rows aliased `p`, by chunk id, big-endian:
    chunk ids int8, tfs and lengths int4 (WIDE); `narrow`: int4 and int2 (NARROW; a cast raises
    numeric_value_out_of_range for a value that does not fit). The pack is built with it and a search
    reads what the pack lacks with it (wide); `score` decodes it."""
    id_type, value_type = ("int4", "int2") if narrow else ("int8", "int4")
    return f"""string_agg({id_type}send({p}.chunk_id::{id_type}), ''::bytea ORDER BY {p}.chunk_id),
           string_agg({value_type}send({p}.tf::{value_type}), ''::bytea ORDER BY {p}.chunk_id),
           string_agg({value_type}send({p}.doc_len::{value_type}), ''::bytea ORDER BY {p}.chunk_id)"""


# Past this many unpacked chunks (a pack is then due: bm25_packs.UNPACKED_MAX) a search reads them with
# one semi-join over the terms' postings, not a probe per chunk. Both read the same rows. Measured at 100k
# chunks, 3 terms: 100 unpacked, probes 0.6 ms and the semi-join 0.7; 1,100: 4.3 and 1.4; 6,000: 22.4 and
# 2.3; 25,000: 101 and 5.5 (5 terms: 159 and 6.9). So many come after a big final write that overlapped
# a pack (migration 0026), until the pack its worker runs next.
PROBED_UNPACKED_MAX = 100


def fetch_sql(many_unpacked: bool) -> str:
    """$1 terms, $2 the collection scope (NULL: every collection the caller sees), $3 the watermark.
    kind 0: a packed row; 1: postings outside the pack; 2: the unpacked chunk ids (their packed entries
    are stale)."""
    if many_unpacked:
        unpacked = f"""
    SELECT 1, p.term, {packed_lists("p")}
    FROM bm25_postings p
    WHERE p.term = ANY($1::text[]) AND p.chunk_id <= $3::int8
      AND ($2::uuid[] IS NULL OR p.collection_id = ANY($2::uuid[]))
      AND p.chunk_id IN (SELECT u.chunk_id FROM bm25_unpacked u)
    GROUP BY p.term"""
    else:
        unpacked = f"""
    SELECT 1, p.term, {packed_lists("p")}
    FROM bm25_unpacked u CROSS JOIN LATERAL (
        -- a probe per unpacked chunk (OFFSET 0 keeps it one), never a scan of the terms' postings
        SELECT * FROM bm25_postings p WHERE p.term = ANY($1::text[]) AND p.chunk_id = u.chunk_id OFFSET 0
    ) p
    WHERE $2::uuid[] IS NULL OR u.collection_id = ANY($2::uuid[])
    GROUP BY p.term"""
    return f"""
    SELECT 0 AS kind, b.term, b.chunk_ids, b.tfs, b.lens
    FROM bm25_packed b
    WHERE b.term = ANY($1::text[]) AND ($2::uuid[] IS NULL OR b.collection_id = ANY($2::uuid[]))
    UNION ALL
    SELECT 1, p.term, {packed_lists("p")}
    FROM bm25_postings p
    WHERE p.term = ANY($1::text[]) AND p.chunk_id > $3::int8
      AND ($2::uuid[] IS NULL OR p.collection_id = ANY($2::uuid[]))
    GROUP BY p.term
    UNION ALL{unpacked}
    UNION ALL
    SELECT 2, NULL, string_agg(int8send(u.chunk_id), ''::bytea), NULL, NULL
    FROM bm25_unpacked u
    WHERE $2::uuid[] IS NULL OR u.collection_id = ANY($2::uuid[])
"""


FETCH_SQL = fetch_sql(many_unpacked=False)
FETCH_MANY_UNPACKED_SQL = fetch_sql(many_unpacked=True)

LIVE_SQL = "SELECT id FROM chunks WHERE id = ANY($1::bigint[])"


@dataclass(frozen=True)
class Pack:
    """The pack a search reads, as its snapshot sees bm25_pack."""

    watermark: int  # every chunk with a larger id is newer than the pack
    narrow: bool  # NARROW entries (migration 0015), else WIDE
    has_deleted: bool  # a chunk at or below the watermark was deleted since (migration 0016)
    many_unpacked: bool = False  # more than PROBED_UNPACKED_MAX chunks unpacked


class Weights:
    """What a posting's contribution needs: w(t) per term, c0, c1 and the fixed-point scale."""

    def __init__(self, terms: Sequence[str], weights: Sequence[float], c0: float, c1: float, scale: float):
        self.by_term = dict(zip(terms, weights, strict=True))
        self.c0, self.c1, self.scale = c0, c1, scale


class Totals:
    """Each chunk's summed score, to take the best from. Dense: `sums[i]` is chunk `low + i`'s, and a
    chunk holds a query term iff its sum is positive. Sparse: `ids` (ascending) and `sums` aligned,
    every chunk holding a query term and no other."""

    def __init__(self, sums: np.ndarray, low: int = 0, ids: np.ndarray | None = None):
        self.sums, self.low, self.ids = sums, low, ids

    def best(self, depth: int) -> list[tuple[int, int]]:
        """`ranked` over every chunk holding a query term, without a pass over them all when dense:
        the depth-th best block maximum is a score at least `depth` chunks reach, so the best `depth`
        all reach it and lie in blocks whose maximum does (a few blocks of a million-slot range)."""
        if self.ids is not None:
            return ranked(self.ids, self.sums, depth)
        blocks = self.sums.reshape(-1, BLOCK)
        maxima = blocks.max(axis=1)
        if np.count_nonzero(maxima) < depth:  # few chunks scored: rank them all
            held = np.flatnonzero(self.sums)
            return ranked(held + self.low, self.sums[held], depth)
        bar = np.partition(maxima, len(maxima) - depth)[len(maxima) - depth]
        chosen = np.flatnonzero(maxima >= bar)
        candidates = blocks[chosen]
        rows, columns = np.nonzero(candidates >= bar)
        return ranked(chosen[rows] * BLOCK + columns + self.low, candidates[rows, columns], depth)


def score(weights: Weights, rows: Sequence[Any], narrow: bool = False) -> Totals:
    """Every chunk holding a query term and its summed score, from FETCH_SQL's rows; `narrow`: the
    pack's rows (kind 0) are NARROW (bm25_pack.narrow), the others always WIDE."""
    stale = next((r["chunk_ids"] for r in rows if r["kind"] == 2 and r["chunk_ids"] is not None), None)
    stale_ids = np.frombuffer(stale, dtype=">i8") if stale else None
    id_parts: list[np.ndarray] = []
    tf_parts: list[np.ndarray] = []
    length_parts: list[np.ndarray] = []
    term_weights: list[float] = []
    for r in rows:
        if r["kind"] == 2:
            continue
        id_type, value_type = NARROW if narrow and r["kind"] == 0 else WIDE
        ids = np.frombuffer(r["chunk_ids"], dtype=id_type)
        tf = np.frombuffer(r["tfs"], dtype=value_type)
        length = np.frombuffer(r["lens"], dtype=value_type)
        if r["kind"] == 0 and stale_ids is not None:
            keep = ~np.isin(ids, stale_ids)
            ids, tf, length = ids[keep], tf[keep], length[keep]
        if ids.size:
            id_parts.append(ids)
            tf_parts.append(tf)
            length_parts.append(length)
            term_weights.append(weights.by_term[r["term"]])
    if not id_parts:  # no posting, or every one stale (a term's chunks in scope all rewritten)
        return Totals(np.empty(0), ids=np.empty(0, dtype=np.int64))
    # Each row's ids ascend: its first and last bound the range without a pass over them.
    low = min(int(part[0]) for part in id_parts)
    span = max(int(part[-1]) for part in id_parts) - low + 1
    ids = np.concatenate(id_parts).astype(np.int64)
    # bm25_native.CONTRIBUTION, w * tf / (tf + c0 + c1 * len) * scale, the same IEEE operations in
    # place (a + b and a * b are exact whichever side comes first); PostgreSQL's float8 -> int4 rounds
    # half to even, as np.rint does.
    contributions = np.concatenate(tf_parts).astype(np.float64)
    denominator = np.concatenate(length_parts).astype(np.float64)
    denominator *= weights.c1
    denominator += contributions + weights.c0
    contributions *= np.repeat(term_weights, [part.size for part in id_parts])
    contributions /= denominator
    contributions *= weights.scale
    np.rint(contributions, out=contributions)
    # Sums of integers below 2**31 each, far below 2**53: exact in float64.
    if span <= 4 * len(ids) + 1_000_000:  # ids dense enough for an accumulator slot per id in range
        ids -= low
        sums = np.bincount(ids, weights=contributions, minlength=-(-span // BLOCK) * BLOCK)
        # Every posting adds at least 1 unless a weight rounds to 0 (a term in nearly every chunk).
        if contributions.min() > 0:
            return Totals(sums, low)
        held = np.flatnonzero(np.bincount(ids, minlength=span))
        return Totals(sums[held], ids=held + low)
    unique, inverse = np.unique(ids, return_inverse=True)
    return Totals(np.bincount(inverse, weights=contributions, minlength=len(unique)), ids=unique)


def ranked(ids: np.ndarray, sums: np.ndarray, depth: int) -> list[tuple[int, int]]:
    """The best `depth` (chunk id, score) by score descending, then chunk id ascending; `sums` hold
    integers (as int64 or exactly as float64)."""
    if len(ids) > depth:
        kth = np.partition(sums, len(sums) - depth)[len(sums) - depth]
        keep = np.flatnonzero(sums >= kth)  # every tie at the cut, then ordered
        ids, sums = ids[keep], sums[keep]
    order = np.lexsort((ids, -sums))[:depth]
    return list(zip(ids[order].tolist(), sums[order].astype(np.int64).tolist(), strict=True))


async def packed_top_k(
    conn: asyncpg.Connection,
    weights: Weights,
    postings: int,
    top_k: int,
    pack: Pack,
    collections: Sequence[UUID] | None,
) -> list[LegHit]:
    """The exact BM25 top_k over the pack and what it lacks; `postings`: the query terms' document
    frequencies summed (decides whether scoring leaves the event loop). Inside the caller's snapshot."""
    scope = None if collections is None else list(collections)
    sql = FETCH_MANY_UNPACKED_SQL if pack.many_unpacked else FETCH_SQL
    rows = await conn.fetch(sql, list(weights.by_term), scope, pack.watermark)
    if postings >= THREAD_POSTINGS:
        totals = await asyncio.to_thread(score, weights, rows, pack.narrow)
    else:
        totals = score(weights, rows, pack.narrow)
    if not pack.has_deleted:  # every packed chunk is still there: no statement to check them
        return [LegHit(chunk_id, total / weights.scale) for chunk_id, total in totals.best(top_k)]
    # Chunks deleted since the pack: a refresh is due once they reach RAG_BM25_PACK_REFRESH_SHARE of it,
    # so a quarter more than asked for is nearly always enough; otherwise look four times deeper.
    depth = top_k + top_k // 4 + 10
    while True:
        best = totals.best(depth)
        live = {r["id"] for r in await conn.fetch(LIVE_SQL, [chunk_id for chunk_id, _ in best])}
        hits = [LegHit(chunk_id, total / weights.scale) for chunk_id, total in best if chunk_id in live]
        if len(hits) >= top_k or len(best) < depth:
            return hits[:top_k]
        depth *= 4
