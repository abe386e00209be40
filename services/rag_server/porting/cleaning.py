"""What a source gives, made storable by the rules every upload follows, or refused with a sentence.

Chroma, pgvector tables and JSONL files hold whatever their writers put there: a NUL in a text or a
metadata string (PostgreSQL's text and jsonb cannot hold it: the INSERT fails), a lone surrogate (a
JSON escape of half a character: no UTF-8 for it), NaN in metadata (jsonb has none). One such record
used to fail its whole batch's transaction with a traceback, and every re-run again. Here each document
is cleaned as an upload is (`text.clean_text`: NUL -> space, a lone surrogate refused;
`ingestion.metadata.check_metadata`: the metadata rules and limits), before anything is written; what
is still unusable is refused for that document alone (`UnusableDocument`, a sentence for the summary).
Chunk texts are stored canonical (composed, NFC; ligatures spelled out: `text.canonical`) as parsed
ones are (`parsing.base.clean_text`): every query is too (`retrieval.legs.clean_query`), so a record
kept decomposed (NFD) would be shown decomposed and missed by a "Contains" filter typed composed (and by
BM25 on ParadeDB, whose pg_search does not compose).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rag_server.errors import InvalidInputError
from rag_server.ingestion.metadata import check_metadata
from rag_server.ingestion.parsing import sanitize_filename
from rag_server.porting.models import ImportChunk, ImportDocument
from rag_server.text import canonical, clean_text

INT4_MAX = 2**31 - 1


class UnusableDocument(ValueError):
    """A document of the source that cannot be stored: skipped alone, its reason in the summary."""


def printable(value: str) -> str:
    """`value` fit for one line of a terminal: control characters and lone surrogates escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in value)


def _text(value: str, what: str) -> str:
    try:
        return clean_text(value)
    except ValueError as exc:
        raise UnusableDocument(f"{what}: {exc}") from None


def _metadata(value: dict[str, Any], what: str) -> dict[str, Any]:
    try:
        return check_metadata(value, what)
    except InvalidInputError as exc:
        raise UnusableDocument(str(exc).rstrip(".")) from None


def _position(value: int | None) -> int | None:
    """A page or character offset PostgreSQL's integer holds; anything else is no position (display
    only: dropped rather than the document)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INT4_MAX:
        return value
    return None


def _chunk(chunk: ImportChunk, i: int) -> ImportChunk:
    where = f"chunk {i}"
    return replace(
        chunk,
        text=canonical(_text(chunk.text, f"{where} text")),
        search_text=canonical(_text(chunk.search_text, f"{where} search text")),
        metadata=_metadata(chunk.metadata, f"{where} metadata"),
        page=_position(chunk.page),
        char_start=_position(chunk.char_start),
        char_end=_position(chunk.char_end),
        heading_path=(
            None if chunk.heading_path is None else canonical(_text(chunk.heading_path, f"{where} heading"))
        ),
        location=None if chunk.location is None else _metadata(chunk.location, f"{where} location"),
    )


def clean_document(doc: ImportDocument) -> ImportDocument:
    """`doc` with every text and metadata string cleaned as an upload's; UnusableDocument (a sentence)
    when something in it cannot be stored even so."""
    # The key only names the document (its id, the summary), it is never stored: it may keep a NUL,
    # but a lone surrogate cannot be hashed into the id (UTF-8 first); it is not composed either: it makes
    # the id on every re-run, as the source wrote it. sanitize_filename composes the name.
    _text(doc.key, "its key")
    return replace(
        doc,
        filename=sanitize_filename(_text(doc.filename, "file name")),
        metadata=_metadata(doc.metadata, "metadata"),
        chunks=[_chunk(c, i) for i, c in enumerate(doc.chunks)],
        import_source=None if doc.import_source is None else _text(doc.import_source, "its store"),
    )
