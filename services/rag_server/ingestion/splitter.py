"""Sentence-aware splitting of a text into chunks of at most `chunk_size` tokens that overlap.

These are the rules of LlamaIndex's SentenceSplitter, the chunker every relevance figure of this project
was measured with (reports/relevance/), written here so that a worker's parsing child does not import
LlamaIndex (~0.9 s of CPU and ~70 MB a start) and chunk boundaries do not move with its releases.
tests/unit/test_splitter.py checks that both give the same chunks.

A text over the size is cut at the first level that cuts it: paragraphs ("\n\n\n"), then sentences (NLTK's
Punkt with its default parameters, untrained); a piece still too long is cut again the same way, and a
piece with no second paragraph or sentence by phrases (after , . ; and CJK stops), else words, else
characters. The pieces are then packed in order into chunks, and each chunk starts with as many of the
previous chunk's last pieces as fit in `chunk_overlap` tokens (fewer when its first new piece needs the
room).

LlamaIndex also marks each piece as a whole sentence or a part of one; its packing reaches that mark only
where it cannot change the outcome, so it is left out here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from rag_server.infra.tokenizer import count_tokens

if TYPE_CHECKING:
    from nltk.tokenize.punkt import PunktSentenceTokenizer

PARAGRAPH_BREAK = "\n\n\n"
WORD_BREAK = " "
PHRASE = re.compile(r"[^,.;。？！]+[,.;。？！]?|[,.;。？！]")


@dataclass(frozen=True)
class _Piece:
    text: str
    tokens: int


@lru_cache(maxsize=1)
def _punkt() -> PunktSentenceTokenizer:
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer()


def _keeping_separator(separator: str) -> Callable[[str], list[str]]:
    """Cuts before each `separator`, which starts the piece after it; empty pieces are dropped."""

    def cut(text: str) -> list[str]:
        first, *rest = text.split(separator)
        return [p for p in (first, *(separator + r for r in rest)) if p]

    return cut


def _sentences(text: str) -> list[str]:
    """Each sentence with the space after it, up to the next; what precedes the first is dropped (white
    space alone holds no sentence: none, and the next level cuts it)."""
    starts = [start for start, _ in _punkt().span_tokenize(text)]
    if not starts:
        return []
    return [text[start:end] for start, end in zip(starts, [*starts[1:], len(text)], strict=True)]


# Coarsest first.
_CUTS: tuple[Callable[[str], list[str]], ...] = (
    _keeping_separator(PARAGRAPH_BREAK),
    _sentences,
    PHRASE.findall,
    _keeping_separator(WORD_BREAK),
    list,
)


class SentenceSplitter:
    def __init__(self, chunk_size: int, chunk_overlap: int) -> None:
        if not 0 <= chunk_overlap <= chunk_size:
            raise ValueError(
                f"the overlap ({chunk_overlap}) must be between 0 and the chunk size ({chunk_size})"
            )
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap

    def split_text(self, text: str) -> list[str]:
        """The chunks of `text`, in order, stripped; none blank."""
        chunks = self._pack(self._pieces(text)) if text else []
        return [c for c in (chunk.strip() for chunk in chunks) if c]

    def _pieces(self, text: str) -> list[_Piece]:
        tokens = count_tokens(text)
        if tokens <= self.chunk_size:
            return [_Piece(text, tokens)]
        parts = _cut(text)
        pieces: list[_Piece] = []
        for part in parts:
            tokens = count_tokens(part)
            if tokens <= self.chunk_size or len(parts) == 1:  # one part: it cannot be cut any further
                pieces.append(_Piece(part, tokens))
            else:
                pieces.extend(self._pieces(part))
        return pieces

    def _pack(self, pieces: list[_Piece]) -> list[str]:
        chunks: list[str] = []
        current: list[_Piece] = []
        size = 0
        fresh = True  # `current` holds only the previous chunk's overlap, if anything

        def close() -> None:
            nonlocal current, size, fresh
            chunks.append("".join(p.text for p in current))
            overlap: list[_Piece] = []
            size = 0
            for piece in reversed(current):
                if size + piece.tokens > self.chunk_overlap:
                    break
                overlap.insert(0, piece)
                size += piece.tokens
            current, fresh = overlap, True

        i = 0
        while i < len(pieces):
            piece = pieces[i]
            if piece.tokens > self.chunk_size:
                raise ValueError(f"a single character is over the chunk size of {self.chunk_size} tokens")
            if not fresh and size + piece.tokens > self.chunk_size:
                close()
                continue
            if fresh:  # the overlap makes room for the chunk's first new piece
                while current and size + piece.tokens > self.chunk_size:
                    size -= current.pop(0).tokens
            current.append(piece)
            size += piece.tokens
            fresh = False
            i += 1
        if not fresh:
            chunks.append("".join(p.text for p in current))
        return chunks


def _cut(text: str) -> list[str]:
    """`text` cut at the first level that cuts it; a text none cuts is one part (its one character)."""
    for cut in _CUTS:
        if len(parts := cut(text)) > 1:
            return parts
    return parts
