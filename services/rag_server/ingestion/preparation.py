"""parse -> chunk of one file: what the worker's parsing child runs (ingestion/parse_child.py).

Kept apart from pipeline.py so the child imports parsing and chunking only, not the database, queue and
embedding code the rest of the pipeline needs (a child starts with every worker and after every crash).
"""

from __future__ import annotations

from rag_server.config import Settings
from rag_server.ingestion.chunking import Chunk, chunk_document
from rag_server.ingestion.parsing import ParseError, parse_document


def prepare_chunks_sync(
    settings: Settings, filename: str, content: bytes, file_type: str, title: str | None = None
) -> list[Chunk]:
    """Parse and chunk (CPU-bound; call through asyncio.to_thread). Raises ParseError.

    `title` (e.g. documents.metadata.title) overrides the parsed title / filename as the context
    prefixed to each chunk's search text.
    """
    parsed = parse_document(filename, content, file_type, title)
    chunks = chunk_document(
        parsed,
        chunk_size=settings.chunk_size,
        chunk_overlap=settings.chunk_overlap,
        include_title=settings.chunk_include_title,
        include_headings=settings.chunk_include_headings,
    )
    if not chunks:
        raise ParseError("The file contains no extractable text.")
    return chunks


def warm_up_chunking(settings: Settings) -> None:
    """Chunk a text once, so the first document does not pay for loading the splitter's tokenizers:
    NLTK's sentence tokenizer (~1 s of CPU) loads only for a paragraph longer than a chunk, hence one
    sentence repeated past the chunk size."""
    text = "A sentence of warm-up text. " * settings.chunk_size
    prepare_chunks_sync(settings, "warm-up.txt", text.encode(), "txt")
