"""Sentence-aware chunking with LlamaIndex's SentenceSplitter; offsets and pages kept per chunk."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from llama_index.core.node_parser import SentenceSplitter

from rag_server.ingestion.parsing import SECTION_SEPARATOR, ParsedDocument


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str  # what a user is shown
    search_text: str  # what BM25 indexes and the embedder sees (title context + text)
    page: int | None
    char_start: int | None  # offsets into ParsedDocument.text; None if the splitter rewrote the text
    char_end: int | None


@lru_cache(maxsize=8)
def _splitter(chunk_size: int, chunk_overlap: int) -> SentenceSplitter:
    # chunk_size/overlap are in tokens (tiktoken cl100k, close to MiniLM word pieces for English).
    return SentenceSplitter(chunk_size=chunk_size, chunk_overlap=min(chunk_overlap, chunk_size // 2))


def search_text_for(title: str, text: str, include_title: bool) -> str:
    return f"{title}\n\n{text}" if include_title and title else text


def chunk_document(
    parsed: ParsedDocument, *, chunk_size: int, chunk_overlap: int, include_title: bool
) -> list[Chunk]:
    """Split each section (a PDF page, or the whole text) into overlapping sentence-aware chunks."""
    splitter = _splitter(chunk_size, chunk_overlap)
    chunks: list[Chunk] = []
    section_start = 0
    for section in parsed.sections:
        cursor = 0
        for piece in splitter.split_text(section.text):
            if not piece.strip():
                continue
            found = section.text.find(piece, cursor)
            if found < 0:
                found = section.text.find(piece)
            start = end = None
            if found >= 0:
                start, end = section_start + found, section_start + found + len(piece)
                cursor = found + 1
            chunks.append(
                Chunk(
                    index=len(chunks),
                    text=piece,
                    search_text=search_text_for(parsed.title, piece, include_title),
                    page=section.page,
                    char_start=start,
                    char_end=end,
                )
            )
        section_start += len(section.text) + len(SECTION_SEPARATOR)
    return chunks
