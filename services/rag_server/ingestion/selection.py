"""Acting on the documents a selection names (POST /documents/delete, /documents/metadata/matching): the
set acted on is the set matched again once its documents are locked, and, when the caller says how many
it confirmed (`expected_count`), exactly that many, or nothing is changed.

A selection is matched first without locks (to know which rows to lock, in the lock order: task rows,
then document rows, ingestion/operations.py); a document edited between that read and its lock may no
longer match. Once the rows are locked (an edit, a replacement's swap, a worker's final write: each
holds the document's row) the selection is matched again among them, in a new statement, which under
READ COMMITTED reads what was committed meanwhile: the documents acted on are those that still match.
A document that came to match after the first read (within the request) is not among them, nor counted:
the set acted on is the one read then, less what left it. A document that came to match, or was
uploaded, between the caller's own count and the request is in the first read: `expected_count` then
differs, as it does for one that no longer matches. It guards the count, not the set: one document
leaving the selection while another joins it leaves the count as confirmed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from rag_server.errors import SelectionChangedError
from rag_server.infra.database import Executor
from rag_server.ingestion.documents import still_matching
from rag_server.ingestion.models import DocumentSelection


@dataclass(frozen=True)
class LockedSelection:
    """A selection of one collection's documents, to be matched again under their row locks."""

    collection_id: UUID
    selection: DocumentSelection
    expected_count: int | None = None

    async def still_matching(self, c: Executor, locked: Sequence[UUID]) -> list[UUID]:
        """Those of `locked` (rows this transaction holds) that the selection names now, in id order."""
        return await still_matching(c, self.collection_id, self.selection, locked) if locked else []

    def check_count(self, count: int, done: str) -> None:
        """SelectionChangedError (409) unless `count`, the documents about to be acted on, is the count
        the caller confirmed; `done` says what was not done to them ("deleted", "updated")."""
        if self.expected_count is None or count == self.expected_count:
            return
        holds = f"{count} document" + ("" if count == 1 else "s")
        raise SelectionChangedError(
            f"the selection now holds {holds}, not the {self.expected_count} confirmed (documents were "
            f"added, changed or deleted meanwhile); nothing was {done}: list them again"
        )
