"""Report tables and the synthetic-chunk recipe (no database)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rag_server.evaluation.report import markdown_table, text_table
from rag_server.evaluation.synthetic import split_halves, synthesize


def sample_result() -> dict[str, Any]:
    scores = {
        "ndcg@10": 0.5,
        "recall@10": 0.6,
        "recall@100": 0.9,
        "mrr@10": 0.55,
        "latency_ms": {"p50": 3.0, "p95": 7.5},
    }
    return {
        "dataset": "d",
        "documents": 3,
        "chunks": 4,
        "queries": 2,
        "settings": {},
        "modes": {"bm25": scores, "hybrid": {**scores, "ndcg@10": 0.75}},
        "peers": {"bm25s": scores},
    }


def test_tables_list_modes_then_peers() -> None:
    md = markdown_table(sample_result()).splitlines()
    assert md[0].startswith("| system | nDCG@10 |")
    assert [line.split(" | ")[0] for line in md[2:]] == ["| bm25", "| hybrid", "| peer: bm25s"]
    assert "| 0.7500 |" in md[3]
    text = text_table(sample_result())
    assert "peer: bm25s" in text and "7.5" in text


def test_split_halves_by_sentence() -> None:
    assert split_halves("One. Two. Three. Four.") == ("One. Two.", "Three. Four.")
    assert split_halves("no sentence end here at all") == ("no sentence end", "here at all")


def test_synthesize_mixes_pool_vectors_deterministically() -> None:
    rng = np.random.default_rng(0)
    pool_vectors = rng.normal(size=(4, 8)).astype(np.float32)
    pool_vectors /= np.linalg.norm(pool_vectors, axis=1, keepdims=True)
    pool = ["Alpha one. Alpha two.", "Beta one. Beta two.", "Gamma one. Gamma two.", "Delta one. Delta two."]
    texts, vectors = synthesize(pool, pool_vectors, 50, seed=3)
    again_texts, again_vectors = synthesize(pool, pool_vectors, 50, seed=3)
    assert texts == again_texts and np.array_equal(vectors, again_vectors)
    assert vectors.shape == (50, 8) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Every synthetic vector stays close to the pool (a mix of two pool vectors plus small noise).
    best = (vectors @ pool_vectors.T).max(axis=1)
    assert best.min() > 0.5
    assert all(" one. " in t and t.endswith(" two.") for t in texts)


def test_parse_modes_keeps_user_order_drops_duplicates_rejects_unknown() -> None:
    from rag_server.evaluation.runner import parse_modes

    assert parse_modes("hybrid, bm25,hybrid") == ["hybrid", "bm25"]
    for bad in ["", " , ", "bm25,dense"]:
        with pytest.raises(ValueError, match="--modes"):
            parse_modes(bad)
