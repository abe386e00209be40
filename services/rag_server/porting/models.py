"""What every importer hands the shared write path: documents with their chunks, in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

import numpy as np

from rag_server.generations.store import Generation


class PortingError(ValueError):
    """A source cannot be read as asked (a readable sentence; the CLI prints it, no traceback)."""


def other_stores_error(elsewhere: dict[str, int], total: int, *, meanwhile: bool = False) -> PortingError:
    """Documents the import would write came from another store (`elsewhere`: how many per store, 0029):
    the same keys of another Chroma directory's collection of the same name. `meanwhile`: found at a
    batch's write, written by an import running at the same time."""
    what = (
        f"of the {total} documents of the batch this import was writing were written meanwhile by an import "
        "running at the same time from"
        if meanwhile
        else f"of the {total} documents this import would write are already in the collection from"
    )
    return PortingError(
        f"{sum(elsewhere.values())} {what} another store of the same name ({', '.join(elsewhere)}), with "
        "the same keys: importing would replace them. Import this store into another collection (a search "
        "takes several), or pass --take-over to update them from this store"
        + ("; the batches written before are kept" if meanwhile else "")
    )


@dataclass(frozen=True)
class SourceRecord:
    """One stored chunk of another vector store: its id there, text, metadata and vector (if any)."""

    id: str
    text: str
    metadata: dict[str, Any]
    embedding: np.ndarray | None


@dataclass(frozen=True)
class ImportChunk:
    text: str
    search_text: str
    metadata: dict[str, Any]
    embedding: np.ndarray | None = None
    page: int | None = None
    char_start: int | None = None
    char_end: int | None = None
    heading_path: str | None = None
    location: dict[str, Any] | None = None


@dataclass(frozen=True)
class ImportDocument:
    """`key` names the document in its source (with the origin it makes the deterministic id).
    `file_type`: what the document was in its source (a JSONL export: "csv", "pdf"; else "txt"), for
    display and type filters; the stored bytes are always the chunk texts (served as text/plain, a "csv"
    saved as `<name>.txt`: ingestion.documents.download_name).
    `exported_id`: a JSONL export's document id: when the target collection holds a document with that
    id, the import is about that document (exported, then imported back), not a copy of it.
    `import_source`: the store the document came from as its export line names it (0029), recorded on
    the copy; None: the import's own store (a Chroma import's), if any."""

    key: str
    filename: str
    metadata: dict[str, Any]
    chunks: list[ImportChunk]
    file_type: str = "txt"
    exported_id: UUID | None = None
    import_source: str | None = None


@dataclass
class ImportCounts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    # Same text as another document already in the collection (dedup is per collection, by sha256).
    duplicates: int = 0
    chunks: int = 0
    embedded: int = 0  # chunks whose vectors were computed here (not reused)
    skipped_keys: list[str] = field(default_factory=list)
    # Documents the source gave in a form nothing can store (a lone surrogate, metadata over the
    # limits, a line that is not a document): (the document's key, why), each skipped alone.
    unusable: list[tuple[str, str]] = field(default_factory=list)
    # Records without a text (Chroma keeps a vector and metadata without one) in documents that have
    # others: nothing to index, left out. A document none of whose records has a text is `unusable`.
    records_without_text: int = 0

    @property
    def stored(self) -> int:
        """Documents of the source the collection holds now (written, or already there)."""
        return self.created + self.updated + self.unchanged + self.duplicates

    def summary(self) -> str:
        unusable = f", {len(self.unusable)} skipped as unusable" if self.unusable else ""
        textless = self.records_without_text
        left_out = f", {textless} record{'s' * (textless != 1)} without text left out" if textless else ""
        return (
            f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.duplicates} skipped as duplicates{unusable}; {self.chunks} chunks written, "
            f"{self.embedded} embedded here{left_out}"
        )


@dataclass(frozen=True)
class VectorPlan:
    """Whether stored vectors are reused, and why (printed before the import starts). `generation_id`:
    the embedding generation they are reused for (None: the plain plan of `vector_plan`)."""

    reuse: bool
    reason: str
    generation_id: int | None = None


def same_model(source: str | None, database: str) -> bool:
    """'sentence-transformers/all-MiniLM-L6-v2' and 'all-minilm-l6-v2' name the same model."""
    if not source:
        return False
    return source.strip().lower().split("/")[-1] == database.strip().lower().split("/")[-1]


def vector_plan(source_model: str | None, source_dim: int | None, model: str, dim: int) -> VectorPlan:
    if source_dim is not None and source_dim != dim:
        return VectorPlan(
            False, f"the source's vectors are {source_dim}-d, this database's {model} is {dim}-d"
        )
    if not source_model:
        return VectorPlan(
            False,
            "the source does not name its embedding model (pass --embedding-model to reuse its vectors)",
        )
    if not same_model(source_model, model):
        return VectorPlan(False, f"the source's vectors come from {source_model}, this database uses {model}")
    if source_dim is None:
        return VectorPlan(False, "the source stores no vectors")
    return VectorPlan(True, f"reusing the stored {dim}-d vectors of {model}")


def generation_plan(
    source_model: str | None, source_dim: int | None, live: Sequence[Generation]
) -> VectorPlan:
    """The plan against the database's embedding generations (`live`: generations.store.live_generations).
    The ACTIVE generation's model decides, as the searches use it; when it does not match, a retired or
    building generation of the source's model still gets the stored vectors (the active one is embedded).
    `reason` is the whole sentence to print."""
    active = next(g for g in live if g.state == "active")
    plan = vector_plan(source_model, source_dim, active.model, active.dim)
    if plan.reuse:
        return replace(plan, generation_id=active.id)
    line = f"re-embedding with {active.model} (the active generation {active.id}): {plan.reason}"
    for g in live:
        if g.state != "active" and vector_plan(source_model, source_dim, g.model, g.dim).reuse:
            return VectorPlan(True, f"{line}; the stored vectors are reused for {g.describe()}", g.id)
    return VectorPlan(False, line)
