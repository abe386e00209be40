"""Collection API types and the name rule (a slug, the same in the database CHECK)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from rag_server.text import Cleaned

# Migration 0003 inserts `default` with this id; column DEFAULTs point at it.
DEFAULT_COLLECTION_ID = UUID("00000000-0000-0000-0000-000000000001")
DEFAULT_COLLECTION = "default"

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
NAME_RE = re.compile(NAME_PATTERN)


def _not_an_id(name: str) -> str:
    # A reference that parses as a UUID is read as an id: a name like that could never be addressed.
    try:
        UUID(name)
    except ValueError:
        return name
    raise ValueError("a collection name must not have the form of a UUID")


CollectionName = Annotated[
    str,
    AfterValidator(_not_an_id),
    Field(
        pattern=NAME_PATTERN,
        max_length=63,
        description="Lower-case letters, digits, '-' and '_', starting with a letter or digit; up to 63.",
    ),
]
# A collection named by its name or its id, as requests do.
CollectionRef = Annotated[str, Field(min_length=1, max_length=100), Cleaned]
Description = Annotated[str, Field(max_length=2_000), Cleaned]
# Convex fusion's weight of the vector leg (docs/decisions/0004); the BM25 leg gets 1 - alpha.
HybridAlpha = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]


@dataclass(frozen=True)
class ResolvedCollection:
    """A collection a request named, as `resolve` finds it: what scoping a query and fusing need. Not
    the API's `Collection`, whose document count is a scan of the collection's documents."""

    id: UUID
    name: str
    hybrid_alpha: float | None


class Collection(BaseModel):
    id: UUID
    name: str
    description: str
    document_count: int
    hybrid_alpha: float | None = Field(
        default=None,
        description="Convex fusion weight of the vector leg when a search of this collection gives "
        "none; null: the server's RAG_HYBRID_ALPHA.",
    )
    created_at: datetime
    updated_at: datetime


class CollectionList(BaseModel):
    items: list[Collection]
    total: int
    limit: int
    offset: int


class CreateCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: CollectionName
    description: Description = ""
    # As PATCH takes it (it was silently dropped here); null or absent: the server's RAG_HYBRID_ALPHA.
    hybrid_alpha: HybridAlpha | None = None


class UpdateCollection(BaseModel):
    """Only the fields given change; a rename follows the same name rule. `hybrid_alpha: null` clears
    the collection's weight (back to the server's), leaving it out keeps it."""

    model_config = ConfigDict(extra="forbid")

    name: CollectionName | None = None
    description: Description | None = None
    hybrid_alpha: HybridAlpha | None = None

    def sets_alpha(self) -> bool:
        """Whether the request names hybrid_alpha at all (null included: a clear)."""
        return "hybrid_alpha" in self.model_fields_set
