"""The multi-scale search bench's pure parts: --scale lists, labels, growth exponents, the report, and
the synthetic recipe's blocks (the same rows whatever the block size); the bench commands' bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag_server.evaluation.bench_build import (
    MAINTENANCE_MEM_MAX_MB,
    MAINTENANCE_MEM_MIN_MB,
    maintenance_mem_mb,
)
from rag_server.evaluation.bench_scale import (
    exponent,
    growth_rows,
    label,
    latency_rows,
    markdown_report,
    parse_scales,
    write_scale_report,
)
from rag_server.evaluation.synthetic import synthesize, synthesize_blocks


def test_parse_scales_takes_numbers_and_suffixes_in_order() -> None:
    assert parse_scales("10000,100k, 300K,1M") == [10_000, 100_000, 300_000, 1_000_000]
    assert parse_scales("1_000_000") == [1_000_000]
    assert parse_scales("2.5k,20") == [2_500, 20]


@pytest.mark.parametrize("text", ["", "10k,,1M", "ten", "-5", "0", "1.5", "10k,10000", "1G"])
def test_parse_scales_refuses_what_is_not_a_distinct_positive_count(text: str) -> None:
    with pytest.raises(ValueError, match="--scale"):
        parse_scales(text)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["search", "--clients", "0,8"], "--clients takes comma-separated whole numbers of at least 1"),
        (["search", "--clients", "8,x"], "--clients takes comma-separated whole numbers of at least 1"),
        (["search", "--scale", "ten"], "--scale: 'ten' is not a number of chunks"),
        (["search", "--scale", "10k,100k", "--url", "http://127.0.0.1:9"], "drop --url"),
        (["ingest", "--workers", "0"], "--workers takes comma-separated whole numbers of at least 1"),
    ],
)
def test_bench_commands_refuse_bad_input_in_one_line(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    """Refused before any database or model is touched: one `error:` line and status 2, no traceback."""
    command = [sys.executable, "-m", "rag_server", "bench", *arguments, "--dataset", str(tmp_path)]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_labels_and_exponents() -> None:
    assert [label(n) for n in (300, 2_000, 10_000, 300_000, 1_000_000, 2_500_000, 12_345)] == [
        "300", "2k", "10k", "300k", "1M", "2.5M", "12345",
    ]  # fmt: skip
    assert exponent(10.0, 100.0, 1_000, 10_000) == pytest.approx(1.0)
    assert exponent(10.0, 10.0, 1_000, 10_000) == pytest.approx(0.0)
    assert exponent(10.0, 20.0, 10_000, 40_000) == pytest.approx(0.5)
    assert exponent(0.0, 5.0, 1, 10) is None


def test_maintenance_memory_follows_the_corpus_within_bounds() -> None:
    assert maintenance_mem_mb(100) == MAINTENANCE_MEM_MIN_MB
    assert MAINTENANCE_MEM_MIN_MB < maintenance_mem_mb(300_000) < MAINTENANCE_MEM_MAX_MB
    assert maintenance_mem_mb(10_000_000) == MAINTENANCE_MEM_MAX_MB


def _run(clients: int, p50: float, qps: float) -> dict[str, Any]:
    return {
        "clients": clients,
        "latency_ms": {"p50": p50, "p95": p50 * 2, "p99": p50 * 3},
        "qps": qps,
        "server_stages_ms_p50": {"total": p50 - 1},
    }


def _scale(chunks: int, p50: float) -> dict[str, Any]:
    return {
        "chunks": chunks,
        "top_k": 10,
        "queries": 300,
        "load_avg_1m_at_start": 1.5,
        "buffers": {"blocks_hit": 990, "blocks_read": 10, "hit_rate": 0.99},
        "runs": {
            m: [_run(1, p50 * f, 40.0), _run(8, p50 * f, 80.0)] for m, f in (("hybrid", 1), ("bm25", 0.5))
        },
        "build": {"total_s": 12.0, "load_s": 8.0, "hnsw_index_s": 3.0, "maintenance_work_mem_mb": 64},
        "sizes_bytes": {
            "chunks_heap": chunks * 2**10,
            "hnsw_index": chunks * 2**11,
            "database": chunks * 2**12,
        },
    }


RESULT = {"clients": [1, 8], "requests": 100, "scales": [_scale(10_000, 10.0), _scale(100_000, 20.0)]}


def test_report_tables_hold_every_scale_and_mode() -> None:
    rows = latency_rows(RESULT, ["hybrid", "bm25"])
    assert [r[:5] for r in rows] == [
        ["10k", "hybrid", "10.0", "20.0", "80.0"],
        ["10k", "bm25", "5.0", "10.0", "80.0"],
        ["100k", "hybrid", "20.0", "40.0", "80.0"],
        ["100k", "bm25", "10.0", "20.0", "80.0"],
    ]
    # p50 doubles over 10x chunks: k = log10(2); sizes grow with the corpus: k = 1; missing sizes: '-'.
    (growth,) = growth_rows(RESULT, ["hybrid", "bm25"])
    assert growth[:5] == ["10k -> 100k", "0.30", "0.30", "1.00", "1.00"]
    assert "-" in growth
    text = markdown_report(RESULT, "chart.png")
    assert "| 100k | hybrid | 20.0 | 40.0 | 80.0 | total=19 | 99.0% | 1.50 |" in text
    assert "| 10k | 12 | 8 | - | 3 | - | - | 10 |" in text  # build seconds (no pack), then chunks heap 10 MB
    assert "![latency, QPS and sizes by corpus size](chart.png)" in text


def test_report_writes_markdown_and_chart(tmp_path: Path) -> None:
    write_scale_report(RESULT, tmp_path / "scale.md")
    assert (tmp_path / "scale.md").read_text().startswith("# Search cost by corpus size")
    assert (tmp_path / "scale.png").read_bytes()[:4] == b"\x89PNG"


def test_synthetic_blocks_are_the_one_shot_rows() -> None:
    pool = ["Alpha beta. Gamma delta epsilon.", "One two three. Four five.", "a b c d e f"]
    pool_vectors = np.random.default_rng(1).normal(size=(3, 16)).astype(np.float32)
    texts, vectors = synthesize(pool, pool_vectors, 1_003, seed=5)
    blocks = list(synthesize_blocks(pool, pool_vectors, 1_003, 100, seed=5))
    assert [len(t) for t, _ in blocks] == [100] * 10 + [3]
    assert [text for t, _ in blocks for text in t] == texts
    assert np.array_equal(np.concatenate([v for _, v in blocks]), vectors)
    assert synthesize(pool, pool_vectors, 0)[1].shape == (0, 16)
