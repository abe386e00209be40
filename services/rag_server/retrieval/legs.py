"""What a retrieval leg returns: chunk ids with the leg's score, best first."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LegHit:
    chunk_id: int
    score: float


def clean_query(text: str) -> str:
    """Text Postgres accepts: no NUL bytes, no lone surrogates. Everything else passes untouched."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", " ")
