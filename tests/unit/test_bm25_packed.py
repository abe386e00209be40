"""Scoring the pack's byte arrays (retrieval/bm25_packed.py) against a plain Python sum; the database
side (the same results as the SQL statements) is tests/integration/test_bm25_packs.py."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from rag_server.retrieval.bm25_packed import BLOCK, NARROW, WIDE, Totals, Weights, ranked, score

WEIGHTS = Weights(["cell", "mous", "gene"], [3.1, 1.7, 0.4], c0=0.3, c1=0.02, scale=2.0**24)


def row(
    kind: int, term: str | None, postings: list[tuple[int, int, int]], widths: tuple[str, str] = WIDE
) -> dict[str, Any]:
    postings = sorted(postings)
    return {
        "kind": kind,
        "term": term,
        "chunk_ids": np.array([p[0] for p in postings], dtype=widths[0]).tobytes(),
        "tfs": np.array([p[1] for p in postings], dtype=widths[1]).tobytes(),
        "lens": np.array([p[2] for p in postings], dtype=widths[1]).tobytes(),
    }


def as_narrow(r: dict[str, Any]) -> dict[str, Any]:
    """A pack's row (kind 0) in the narrow format; the others stay wide, as FETCH_SQL builds them."""
    if r["kind"] != 0:
        return r
    decoded = {
        k: np.frombuffer(r[k], dtype=t)
        for k, t in zip(("chunk_ids", "tfs", "lens"), (">i8", ">i4", ">i4"), strict=True)
    }
    return r | {
        "chunk_ids": decoded["chunk_ids"].astype(NARROW[0]).tobytes(),
        "tfs": decoded["tfs"].astype(NARROW[1]).tobytes(),
        "lens": decoded["lens"].astype(NARROW[1]).tobytes(),
    }


def reference(rows: list[dict[str, Any]]) -> dict[int, int]:
    """Per chunk: the sum of round-half-even(w * tf / (tf + c0 + c1 * len) * scale), stale packed
    entries left out (what the SQL statements compute, one posting at a time)."""
    stale = {int(x) for r in rows if r["kind"] == 2 for x in np.frombuffer(r["chunk_ids"], dtype=">i8")}
    sums: dict[int, int] = {}
    for r in rows:
        if r["kind"] == 2:
            continue
        ids = np.frombuffer(r["chunk_ids"], dtype=">i8").tolist()
        tfs = np.frombuffer(r["tfs"], dtype=">i4").tolist()
        lens = np.frombuffer(r["lens"], dtype=">i4").tolist()
        w = WEIGHTS.by_term[r["term"]]
        for chunk_id, tf, length in zip(ids, tfs, lens, strict=True):
            if r["kind"] == 0 and chunk_id in stale:
                continue
            value = round(w * tf / (tf + WEIGHTS.c0 + WEIGHTS.c1 * length) * WEIGHTS.scale)
            sums[chunk_id] = sums.get(chunk_id, 0) + value
    return sums


def every_total(totals: Totals) -> dict[int, int]:
    return dict(totals.best(10**9))


def expected_best(sums: dict[int, int], depth: int) -> list[tuple[int, int]]:
    return sorted(sums.items(), key=lambda item: (-item[1], item[0]))[:depth]


def random_rows(rng: random.Random, id_range: int) -> list[dict[str, Any]]:
    rows = []
    for term in WEIGHTS.by_term:
        ids = rng.sample(range(1, id_range), 300)
        rows.append(row(0, term, [(i, rng.randint(1, 4), rng.randint(5, 200)) for i in ids]))
    stale = rng.sample(range(1, id_range), 40)
    rows.append(row(1, "cell", [(i, rng.randint(1, 4), rng.randint(5, 200)) for i in stale[:20]]))
    rows.append(row(2, None, [(i, 0, 0) for i in stale]))
    return rows


def test_scores_equal_the_posting_by_posting_sum_for_dense_and_sparse_ids() -> None:
    rng = random.Random(3)
    for id_range in (2_000, 10**12):  # an accumulator per id in range; np.unique for scattered ids
        rows = random_rows(rng, id_range)
        assert every_total(score(WEIGHTS, rows)) == reference(rows)


def test_a_narrow_packs_rows_score_as_the_wide_ones() -> None:
    """bm25_pack.narrow: the pack's rows hold int4 ids and int2 tfs and lengths, the postings read beside
    them (kind 1) and the stale ids (kind 2) stay wide."""
    rows = random_rows(random.Random(4), 2**31 - 1)
    narrow_rows = [as_narrow(r) for r in rows]
    assert narrow_rows[0]["chunk_ids"] != rows[0]["chunk_ids"]
    assert every_total(score(WEIGHTS, narrow_rows, narrow=True)) == reference(rows)


def test_the_best_of_dense_sums_equal_a_full_sort_at_every_depth() -> None:
    """Dense sums over hundreds of blocks: the best chunks found from the blocks' maxima are those of a
    sort of every chunk, ties at the cut by id, including ties spread over many blocks."""
    rng = random.Random(5)
    rows = random_rows(rng, 300 * BLOCK)
    tied = [(i, 1, 20) for i in rng.sample(range(1, 300 * BLOCK), 200)]  # equal scores everywhere
    rows.append(row(0, "gene", tied))
    rows = [r for r in rows if r["kind"] != 1 and r["kind"] != 2]
    sums = reference(rows)
    totals = score(WEIGHTS, rows)
    assert totals.ids is None  # the dense accumulator, as at a million chunks
    for depth in (1, 2, 10, 50, 72, 250, 299, 300, 700, 5000):
        assert totals.best(depth) == expected_best(sums, depth)


def test_stale_packed_entries_are_masked_and_their_new_postings_kept() -> None:
    rows = [
        row(0, "cell", [(1, 1, 10), (2, 3, 10)]),
        row(1, "cell", [(2, 1, 50)]),  # chunk 2 rewritten after the pack
        row(2, None, [(2, 0, 0)]),
    ]
    sums = every_total(score(WEIGHTS, rows))
    assert sums == reference(rows) and list(sums) == [1, 2]
    assert sums[1] > sums[2]  # the stale tf 3 is gone
    assert score(WEIGHTS, [row(2, None, [])]).best(10) == []


def test_ranked_orders_by_score_then_id_and_keeps_ties_at_the_cut_in_order() -> None:
    ids = np.array([5, 3, 9, 1, 7], dtype=np.int64)
    sums = np.array([10, 10, 7, 10, 12], dtype=np.int64)
    assert ranked(ids, sums, 1) == [(7, 12)]
    assert ranked(ids, sums, 3) == [(7, 12), (1, 10), (3, 10)]
    assert ranked(ids, sums, 10) == [(7, 12), (1, 10), (3, 10), (5, 10), (9, 7)]


def test_a_chunk_whose_contributions_all_round_to_zero_is_still_held() -> None:
    """A term in nearly every chunk can weigh less than one unit of the fixed point: its chunks score 0
    and are still chunks holding a query term, as in the SQL statements' sums."""
    weights = Weights(["cell", "the"], [3.1, 1e-12], c0=0.3, c1=0.02, scale=2.0**24)
    rows = [row(0, "cell", [(1, 1, 10)]), row(0, "the", [(1, 2, 10), (2, 1, 10), (5, 1, 30)])]
    best = score(weights, rows).best(10)
    assert [chunk_id for chunk_id, _ in best] == [1, 2, 5]
    assert [total for _, total in best][1:] == [0, 0] and best[0][1] > 0
