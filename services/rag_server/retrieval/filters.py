"""SQL for search filters, shared by both legs so a filter is applied before LIMIT in each.

Semantics: `None` means "no filter"; an empty list matches nothing (a scope with no members).
The collection scope (ids already resolved by `collections.store.resolve`) is kept apart from the
other clauses: each leg places it on its own table's denormalised `collection_id` (the vector leg and
pg_search on `c`, native BM25 on its postings `p`), so a scope alone never needs a join.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from rag_server.retrieval.metadata_match import metadata_clauses
from rag_server.retrieval.models import SearchFilters
from rag_server.retrieval.text_match import chunk_contains, text_clause


@dataclass
class FilterSQL:
    """WHERE clauses over `c` (chunks) and `d` (documents), the collection scope's placeholder, and
    their bind parameters."""

    clauses: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    needs_documents: bool = False
    collections_param: str | None = None  # "$n" bound to the scope's uuid[]; None: any collection
    documents_param: str | None = None  # "$n" bound to `document_ids`' uuid[]; None: no such filter

    def scope(self, column: str) -> list[str]:
        """The collection scope as a clause on `column`, a `collection_id` of the caller's table."""
        if self.collections_param is None:
            return []
        return [f"{column} = ANY({self.collections_param}::uuid[])"]

    def joins(self, chunk_id_expr: str | None = None) -> str:
        """JOINs that bring `c` (and `d` when needed) into a query; `chunk_id_expr` links `c`.
        The collection scope needs none: it is on the caller's own table."""
        if not self.clauses:
            return ""
        parts = []
        if chunk_id_expr is not None:
            parts.append(f"JOIN chunks c ON c.id = {chunk_id_expr}")
        if self.needs_documents:
            parts.append("JOIN documents d ON d.id = c.document_id")
        return " ".join(parts)

    def where(self, prefix: str = "WHERE", collection_column: str = "c.collection_id") -> str:
        clauses = self.scope(collection_column) + self.clauses
        return f"{prefix} " + " AND ".join(clauses) if clauses else ""


class LegFilters(SearchFilters):
    """A request's filters, and documents a leg leaves out: group_by=document reading past the documents
    whose chunks filled it (ranking.fill_documents). Built by the search, never part of a request."""

    excluded_documents: list[UUID]

    @classmethod
    def beside(cls, filters: SearchFilters | None, excluded: Sequence[UUID]) -> LegFilters:
        fields = dict(filters) if filters is not None else {}
        return cls.model_construct(**fields, excluded_documents=list(excluded))


def normalise_file_type(value: str) -> str:
    return value.strip().lower().lstrip(".")


def build_filters(
    filters: SearchFilters | None, first_param: int, collections: Sequence[UUID] | None = None
) -> FilterSQL:
    """Clauses numbered from `$first_param`; user values are only ever bound, never interpolated.
    `collections`: the chunk must be in one of them (None: any collection)."""
    out = FilterSQL()

    def bind(value: Any) -> str:
        out.params.append(value)
        return f"${first_param + len(out.params) - 1}"

    if collections is not None:
        out.collections_param = bind(list(collections))
    if filters is None:
        return out

    if isinstance(filters, LegFilters) and filters.excluded_documents:
        out.clauses.append(f"c.document_id <> ALL({bind(filters.excluded_documents)}::uuid[])")
    if filters.document_ids is not None:
        out.documents_param = bind(list(filters.document_ids))
        out.clauses.append(f"c.document_id = ANY({out.documents_param}::uuid[])")
    if filters.file_types is not None:
        types = sorted({normalise_file_type(t) for t in filters.file_types})
        out.clauses.append(f"lower(d.file_type) = ANY({bind(types)}::text[])")
        out.needs_documents = True
    if filters.metadata:
        # Chunk metadata overrides the document's.
        out.clauses += metadata_clauses(
            "(d.metadata || c.metadata)", filters.metadata, out.params, first_param
        )
        out.needs_documents = True
    if filters.text:
        out.clauses.append(text_clause(filters.text, out.params, first_param, chunk_contains("c.text")))
    return out
