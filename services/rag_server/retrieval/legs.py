"""What a retrieval leg returns: chunk ids with the leg's score, best first."""

from __future__ import annotations

from dataclasses import dataclass

from rag_server.text import canonical


@dataclass(frozen=True)
class LegHit:
    chunk_id: int
    score: float


def clean_query(text: str) -> str:
    """Text Postgres accepts (no NUL bytes, no lone surrogates), in stored chunks' form (text.canonical:
    composed, NFC; ligatures spelled out)
    (parsing.base.clean_text): a query typed decomposed (macOS, some keyboards: Greek with oxia, Arabic
    madda, Devanagari nukta, Hebrew marks in typing order) otherwise misses them in BM25 and the floor's
    every-word check, on either engine; rag_bm25_text composes only where its tests look (0025, 0027)."""
    text = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", " ")
    return canonical(text)
