"""Sentence-aware chunking (splitter.py: LlamaIndex's SentenceSplitter's rules); offsets, pages, heading
paths and locations kept per chunk. Table rows are packed (whole rows) into chunks instead of split as
prose."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rag_server.infra.tokenizer import count_tokens
from rag_server.ingestion.parsing import HEADING_SEPARATOR, ParsedDocument, Section
from rag_server.ingestion.splitter import SentenceSplitter


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str  # what a user is shown
    search_text: str  # what BM25 indexes and the embedder sees (title + heading path + text)
    page: int | None
    char_start: int | None  # offsets into ParsedDocument.text; None if the splitter rewrote the text
    char_end: int | None
    heading_path: str | None = None  # "Guide > Install > Linux"; a slide's title; a sheet's name
    # Where in the file, beyond the page: {"slide": 3, "part": "notes"}, {"sheet": "S", "row_start": 12,
    # "row_end": 30} (CSV: no sheet). Stored in chunks.location (jsonb).
    location: dict[str, Any] | None = None


@lru_cache(maxsize=8)
def _splitter(chunk_size: int, chunk_overlap: int) -> SentenceSplitter:
    # chunk_size/overlap are in tokens (tiktoken cl100k, close to MiniLM word pieces for English).
    return SentenceSplitter(chunk_size, min(chunk_overlap, chunk_size // 2))


def search_text_for(title: str, text: str, include_title: bool, heading_path: str | None = None) -> str:
    """The context lines (title, then the heading path) above the text that is indexed and embedded.

    A path that starts with the title (a Markdown document's `# Title`) does not repeat it."""
    context = [title] if include_title and title else []
    if heading_path and context:
        heading_path = heading_path.removeprefix(title + HEADING_SEPARATOR)
    if heading_path and heading_path not in context:
        context.append(heading_path)
    return "\n".join(context) + f"\n\n{text}" if context else text


def chunk_document(
    parsed: ParsedDocument,
    *,
    chunk_size: int,
    chunk_overlap: int,
    include_title: bool,
    include_headings: bool = True,
) -> list[Chunk]:
    """Split each section (a PDF page, a slide part, a run under one heading) into overlapping
    sentence-aware chunks; consecutive rows of one table become chunks of whole rows."""
    pieces: list[tuple[str, int | None, Section, dict[str, Any] | None]] = []
    for group, start in _groups(parsed):
        if group[0].record:
            pieces.extend(_pack_records(group, start, chunk_size))
        else:
            section = group[0]
            pieces.extend(
                (text, at, section, section.location)
                for text, at in _split(section, start, chunk_size, chunk_overlap)
            )
    chunks: list[Chunk] = []
    seen: set[str] = set()
    for text, at, section, location in pieces:
        path = HEADING_SEPARATOR.join(section.heading_path) or None
        search_text = search_text_for(parsed.title, text, include_title, path if include_headings else None)
        # A passage repeated word for word (a blank page's notice, a file of identical rows) is kept
        # once: each copy would be the same vector, and thousands of equal vectors leave pgvector's HNSW
        # graph unable to reach documents written after them (reports/hnsw-duplicates.md).
        if search_text in seen:
            continue
        seen.add(search_text)
        chunks.append(
            Chunk(
                index=len(chunks),
                text=text,
                search_text=search_text,
                page=section.page,
                char_start=at,
                char_end=None if at is None else at + len(text),
                heading_path=path,
                location=location,
            )
        )
    return chunks


def _groups(parsed: ParsedDocument) -> Iterator[tuple[list[Section], int]]:
    """Each prose section alone; the rows of one table together (with the start of the first)."""
    group: list[Section] = []
    group_start = 0
    for section, start, _ in parsed.with_offsets():
        if group and group[-1].same_table(section):
            group.append(section)
            continue
        if group:
            yield group, group_start
        group, group_start = [section], start
    if group:
        yield group, group_start


# The splitter hands a paragraph longer than a chunk to NLTK's sentence tokenizer whole, and NLTK runs each
# regular expression under a 5 s wall-clock limit (nltk.redos): a section of a few MB with no blank line
# (a long text file, a big table cell) failed with a TimeoutError, sooner on a busy machine. Longer
# sections are cut first, at a paragraph break (else a line break, else a space) in the last half of each
# window of this size: large enough that ordinary documents never meet it (their chunks stay as they were).
WINDOW_CHARS = 500_000


def windows(text: str, size: int | None = None) -> Iterator[tuple[str, int]]:
    """`text` as consecutive pieces of at most `size` (WINDOW_CHARS) characters, with their starts, cut
    after a paragraph break, a line break or a space where the last half of a window has one."""
    size = size or WINDOW_CHARS
    start = 0
    while len(text) - start > size:
        end = start + size
        cut = -1
        for boundary in ("\n\n", "\n", " "):
            found = text.rfind(boundary, start + size // 2, end - len(boundary) + 1)
            if found >= 0:
                cut = found + len(boundary)
                break
        cut = end if cut < 0 else cut
        yield text[start:cut], start
        start = cut
    yield text[start:], start


def _split(
    section: Section, section_start: int, chunk_size: int, chunk_overlap: int
) -> Iterator[tuple[str, int | None]]:
    splitter = _splitter(chunk_size, chunk_overlap)
    for window, window_start in windows(section.text):
        cursor = 0
        for piece in splitter.split_text(window):
            if not piece.strip():
                continue
            found = window.find(piece, cursor)
            if found < 0:
                found = window.find(piece)
            if found >= 0:
                cursor = found + 1
                yield piece, section_start + window_start + found
            else:
                yield piece, None


def _pack_records(
    rows: list[Section], start: int, chunk_size: int
) -> Iterator[tuple[str, int | None, Section, dict[str, Any] | None]]:
    """Whole rows up to `chunk_size` tokens a chunk; a longer row is split and keeps its row number."""
    batch: list[Section] = []
    batch_start = start
    tokens = 0
    at = start
    for row in rows:
        size = count_tokens(row.text)
        if batch and tokens + size > chunk_size:
            yield "\n".join(r.text for r in batch), batch_start, batch[0], _rows_location(batch)
            batch, tokens = [], 0
        if size > chunk_size:
            for piece, piece_at in _split(row, at, chunk_size, 0):
                yield piece, piece_at, row, _rows_location([row])
        else:
            if not batch:
                batch_start = at
            batch.append(row)
            tokens += size
        at += len(row.text) + 1  # RECORD_SEPARATOR
    if batch:
        yield "\n".join(r.text for r in batch), batch_start, batch[0], _rows_location(batch)


def _rows_location(rows: list[Section]) -> dict[str, Any]:
    first, last = rows[0].location or {}, rows[-1].location or {}
    location = {k: v for k, v in first.items() if k != "row"}
    location.update(row_start=first.get("row"), row_end=last.get("row"))
    return location
