"""What every importer hands the shared write path: documents with their chunks, in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class PortingError(ValueError):
    """A source cannot be read as asked (a readable sentence; the CLI prints it, no traceback)."""


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


@dataclass(frozen=True)
class ImportDocument:
    """`key` names the document in its source (with the origin it makes the deterministic id)."""

    key: str
    filename: str
    metadata: dict[str, Any]
    chunks: list[ImportChunk]


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

    def summary(self) -> str:
        return (
            f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.duplicates} skipped as duplicates; {self.chunks} chunks written, "
            f"{self.embedded} embedded here"
        )


@dataclass(frozen=True)
class VectorPlan:
    """Whether stored vectors are reused, and why (printed before the import starts)."""

    reuse: bool
    reason: str


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
