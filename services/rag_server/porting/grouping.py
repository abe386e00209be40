"""Records of a vector store -> documents with ordered chunks.

Chroma, LlamaIndex and LangChain stores hold chunks, not documents; what ties a document's chunks
together is a metadata key their loaders write: LlamaIndex `ref_doc_id` / `document_id` / `doc_id`,
LangChain loaders `source` (a path or URL), some `file_path` / `file_name`. The first of these a record
has is its document; a record with none is a document of its own. Within a document the chunks keep the
source's order, unless every record carries a numeric `start_index` / `chunk_index` (LangChain's
add_start_index, many hand-written pipelines): then that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rag_server.ingestion.parsing import sanitize_filename
from rag_server.porting.models import ImportChunk, ImportDocument, SourceRecord

GROUP_KEYS = ("ref_doc_id", "document_id", "doc_id", "source", "file_path", "file_name", "filename")
ORDER_KEYS = ("start_index", "chunk_index")
# LlamaIndex's serialised node (text, relations: already stored as columns) and type tag: not metadata.
INTERNAL_KEYS = frozenset({"_node_content", "_node_type"})
# `--group-by none`: one document per record.
NO_GROUPING = "none"
TEXT_SUFFIXES = (".txt", ".md", ".markdown")
# Where a chunk keeps its record's id in the source: the first name its own metadata leaves free.
RECORD_ID_KEYS = ("source_id", "source_record_id")


# Where loaders record a chunk's page, numbered from 1: LlamaIndex's readers and LangChain's PDF loaders
# `page_label` (a label: only a number is a page; "iv" is not), Unstructured `page_number`. LangChain's
# `page` counts from 0 in its PDF loaders but not in every pipeline, so it stays metadata only.
PAGE_KEYS = ("page_label", "page_number")
MAX_PAGE = 2**31 - 1  # chunks.page is an integer


def page_of(metadata: dict[str, Any]) -> int | None:
    """The chunk's page (the web app, citations and /search show it), when its loader named one."""
    for key in PAGE_KEYS:
        value = metadata.get(key)
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PAGE:
            return value
    return None


def clean_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (metadata or {}).items() if k not in INTERNAL_KEYS}


def group_key(record_id: str, metadata: dict[str, Any], group_by: str | None) -> str:
    if group_by == NO_GROUPING:
        return record_id
    for key in (group_by,) if group_by else GROUP_KEYS:
        value = metadata.get(key)
        # LlamaIndex writes ref_doc_id "None" (str(None)) for a node without a source document.
        if (
            isinstance(value, str | int)
            and not isinstance(value, bool)
            and str(value).strip() not in ("", "None")
        ):
            return str(value)
    return record_id


def _order(metadata: dict[str, Any]) -> float | None:
    for key in ORDER_KEYS:
        value = metadata.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


@dataclass
class GroupPlan:
    """Record ids per document key, first-seen order of documents, chunk order inside each."""

    _groups: dict[str, list[tuple[float | None, int, str]]] = field(default_factory=dict)
    records: int = 0

    def add(self, record_id: str, metadata: dict[str, Any], group_by: str | None) -> None:
        key = group_key(record_id, metadata, group_by)
        self._groups.setdefault(key, []).append((_order(metadata), self.records, record_id))
        self.records += 1

    def groups(self) -> list[tuple[str, list[str]]]:
        out = []
        for key, members in self._groups.items():
            if all(order is not None for order, _, _ in members):
                members = sorted(members, key=lambda m: (m[0], m[1]))
            out.append((key, [record_id for _, _, record_id in members]))
        return out


def display_name(key: str, common: dict[str, Any]) -> str:
    """The source's file name when the metadata names one; stored bytes are the text, hence .txt."""
    for name_key in ("file_name", "filename", "file_path", "source"):
        value = common.get(name_key)
        if isinstance(value, str) and value.strip():
            key = value
            break
    name = sanitize_filename(key.rstrip("/"), folders=False)
    return name if name.lower().endswith(TEXT_SUFFIXES) else f"{name}.txt"


def _with_record_id(own: dict[str, Any], metadata: dict[str, Any], record_id: str) -> dict[str, Any]:
    """A chunk's own metadata plus the record's id in the source, under the first of RECORD_ID_KEYS the
    record's metadata (`metadata`, shared keys included) does not already use: the user's own
    `source_id` is kept (filters read document and chunk metadata as one, the chunk's key winning)."""
    for key in RECORD_ID_KEYS:
        if key not in metadata:
            return {**own, key: record_id}
    return own  # both names taken by the source's own metadata: the id is not kept


def has_text(record: SourceRecord) -> bool:
    return bool(record.text and record.text.strip())


def build_document(key: str, records: Sequence[SourceRecord]) -> ImportDocument | None:
    """One document from its records in order; records without text are dropped (nothing to index).
    The metadata every chunk shares goes on the document, the rest (and the source id) on each chunk."""
    kept = [r for r in records if has_text(r)]
    if not kept:
        return None
    metas = [clean_metadata(r.metadata) for r in kept]
    common = {k: v for k, v in metas[0].items() if all(k in m and m[k] == v for m in metas[1:])}
    chunks = [
        ImportChunk(
            text=r.text,
            search_text=r.text,
            metadata=_with_record_id({k: v for k, v in m.items() if k not in common}, m, r.id),
            embedding=r.embedding,
            page=page_of(m),
        )
        for r, m in zip(kept, metas, strict=True)
    ]
    return ImportDocument(key=key, filename=display_name(key, common), metadata=common, chunks=chunks)
