"""Synthetic chunks for latency benchmarks at scale (100k+ chunks without embedding 100k texts).

How they are made (cheap, but with realistic statistics for both legs):
- Texts: a pool of real passages (title + abstract sentences) from a BEIR corpus. Each synthetic
  chunk joins the first half of one random passage with the second half of another, so BM25 sees
  natural vocabulary and term frequencies (Zipf), not random words.
- Embeddings: only the pool (1,000 passages) is embedded with the real model. A synthetic
  chunk's vector is the normalised mix w*e_a + (1-w)*e_b (w uniform in 0.3..0.7) of its two source
  passages plus small Gaussian noise. Vectors therefore cluster like real embeddings (HNSW behaves as
  on real data; uniform random unit vectors would be an unrealistically hard case) and stay close to
  their text's topics, so vector hits for real queries are plausible.
- Rows are written with the same one-INSERT-per-batch shape as ingestion (INSERT ... SELECT FROM
  unnest(...)), so the statement-level BM25 triggers index them exactly like ingested chunks.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import asyncpg
import numpy as np

from rag_server.evaluation.beir import BeirDocument
from rag_server.infra.admin import get_meta, set_meta
from rag_server.ingestion.chunking import Chunk
from rag_server.ingestion.chunks import insert_chunks

CHUNKS_PER_DOCUMENT = 10
INSERT_BATCH = 2_000  # chunks per INSERT statement (one trigger run each)
MARKER = "bench_synthetic"

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def passage_pool(documents: Sequence[BeirDocument], size: int, max_words: int = 120) -> list[str]:
    """Up to `size` real passages: title + the first sentences of the text, about max_words long."""
    pool: list[str] = []
    for doc in documents[:size]:
        words = f"{doc.title}. {doc.text}".split()
        if len(words) >= 8:
            pool.append(" ".join(words[:max_words]))
    return pool


def split_halves(text: str) -> tuple[str, str]:
    sentences = _SENTENCE.split(text)
    if len(sentences) < 2:
        words = text.split()
        mid = len(words) // 2
        return " ".join(words[:mid]), " ".join(words[mid:])
    mid = len(sentences) // 2
    return " ".join(sentences[:mid]), " ".join(sentences[mid:])


def synthesize(
    pool: Sequence[str], pool_vectors: np.ndarray, count: int, seed: int = 7
) -> tuple[list[str], np.ndarray]:
    """`count` (text, vector) pairs mixed from the embedded pool; deterministic for a seed."""
    texts: list[str] = []
    blocks: list[np.ndarray] = []
    for block_texts, block_vectors in synthesize_blocks(pool, pool_vectors, count, max(count, 1), seed):
        texts += block_texts
        blocks.append(block_vectors)
    dim = pool_vectors.shape[1]
    return texts, np.concatenate(blocks) if blocks else np.zeros((0, dim), dtype=np.float32)


def synthesize_blocks(
    pool: Sequence[str], pool_vectors: np.ndarray, count: int, block: int, seed: int = 7
) -> Iterator[tuple[list[str], np.ndarray]]:
    """synthesize() in blocks of `block` rows, the same rows whatever the block size: memory stays
    bounded at any scale (1M vectors of 384 floats and their float64 noise are ~4.5GB at once)."""
    rng = np.random.default_rng(seed)
    halves = [split_halves(text) for text in pool]
    a = rng.integers(0, len(pool), size=count)
    b = rng.integers(0, len(pool), size=count)
    w = rng.uniform(0.3, 0.7, size=(count, 1)).astype(np.float32)
    # The noise is drawn last and in row order: successive draws continue one stream, so blocks
    # concatenate to exactly the one-shot result (tests/unit/test_bench_scale.py).
    for start in range(0, count, block):
        end = min(start + block, count)
        ba, bb, bw = a[start:end], b[start:end], w[start:end]
        vectors = bw * pool_vectors[ba] + (1 - bw) * pool_vectors[bb]
        vectors += rng.normal(0.0, 0.02, size=vectors.shape).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        texts = [f"{halves[i][0]} {halves[j][1]}".strip() for i, j in zip(ba, bb, strict=True)]
        yield texts, vectors.astype(np.float32)


async def insert_synthetic(
    conn: asyncpg.Connection,
    texts: Sequence[str],
    vectors: np.ndarray,
    progress: Callable[[int], None] | None = None,
    first: int = 0,
) -> None:
    """Write documents (CHUNKS_PER_DOCUMENT chunks each, status ready) and their chunks; `first`: the
    number of chunks written before these (a block of a larger load), for the file names."""
    for start in range(0, len(texts), INSERT_BATCH):
        batch_texts = texts[start : start + INSERT_BATCH]
        batch_vectors = vectors[start : start + INSERT_BATCH]
        doc_count = -(-len(batch_texts) // CHUNKS_PER_DOCUMENT)
        doc_ids = [uuid.uuid4() for _ in range(doc_count)]
        async with conn.transaction():
            await conn.executemany(
                """
                INSERT INTO documents (id, filename, file_type, content_type, size_bytes, sha256, status,
                                       chunk_count, metadata)
                VALUES ($1, $2, 'txt', 'text/plain', $3, $4, 'ready', $5, $6)
                """,
                [
                    (
                        doc_id,
                        f"synthetic-{(first + start) // CHUNKS_PER_DOCUMENT + n}.txt",
                        sum(
                            len(t)
                            for t in batch_texts[n * CHUNKS_PER_DOCUMENT : (n + 1) * CHUNKS_PER_DOCUMENT]
                        ),
                        hashlib.sha256(doc_id.bytes).hexdigest(),
                        len(batch_texts[n * CHUNKS_PER_DOCUMENT : (n + 1) * CHUNKS_PER_DOCUMENT]),
                        {"synthetic": True},
                    )
                    for n, doc_id in enumerate(doc_ids)
                ],
            )
            # ONE statement for the whole batch: the BM25 triggers are statement-level.
            await insert_chunks(
                conn,
                [doc_ids[n // CHUNKS_PER_DOCUMENT] for n in range(len(batch_texts))],
                [
                    Chunk(n % CHUNKS_PER_DOCUMENT, text, text, None, None, None)
                    for n, text in enumerate(batch_texts)
                ],
                batch_vectors,
            )
        if progress is not None:
            progress(len(batch_texts))


async def synthetic_count(conn: asyncpg.Connection) -> int | None:
    """The scale recorded after a completed load, or None."""
    marker = await get_meta(conn, MARKER)
    return None if marker is None else int(marker["chunks"])


async def mark_loaded(
    conn: asyncpg.Connection, chunks: int, pool_size: int, build: dict[str, Any] | None = None
) -> None:
    """The completion marker; `build` (phases, seconds, settings) is kept for later reports."""
    await set_meta(conn, MARKER, {"chunks": chunks, "pool": pool_size, "at": time.time(), "build": build})


async def build_info(conn: asyncpg.Connection) -> dict[str, Any] | None:
    """How the database was built (bench_build.bulk_load's record), None for older builds."""
    marker = await get_meta(conn, MARKER)
    return None if marker is None else marker.get("build")
