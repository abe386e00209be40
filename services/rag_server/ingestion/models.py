"""Ingestion API types: what the store functions return and the routes declare as their responses."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, get_args
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from rag_server.collections.models import DEFAULT_COLLECTION, CollectionRef
from rag_server.retrieval.metadata_match import METADATA_MATCH_RULES
from rag_server.retrieval.models import MetadataMatch, TextMatch
from rag_server.retrieval.text_match import TEXT_MATCH_RULES
from rag_server.text import Cleaned, NotBool

TaskStatus = Literal["queued", "processing", "completed", "failed", "duplicate"]
TASK_STATUSES: tuple[TaskStatus, ...] = get_args(TaskStatus)
DocumentStatus = Literal["queued", "processing", "ready", "failed"]
BatchState = Literal["queued", "processing", "completed", "completed_with_errors", "failed"]
DocumentSort = Literal["name", "uploaded", "chunks", "size", "type", "status"]
# A listing's filter by name (GET /documents, MCP list_documents): a part of the name, matched literally.
NamePart = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        description="Part of the document's name, any case, accents or none ('ecole' finds 'École.pdf')",
    ),
    Cleaned,
    # Names are stored composed (NFC, as uploads are cleaned): "u" + a combining diaeresis finds "ü".
    AfterValidator(lambda part: unicodedata.normalize("NFC", part)),
]


class TaskRef(BaseModel):
    """One uploaded file's task: queued, or `duplicate` of an already stored document, or `failed` at
    once (the bytes of a failed document a new file of which is queued: `detail` says why)."""

    task_id: UUID
    filename: str
    status: TaskStatus
    document_id: UUID | None
    replaces_version: int | None = Field(
        default=None, description="A replacement: the document version it supersedes once processed."
    )
    detail: str | None = Field(
        default=None,
        description="Why nothing was done (a replacement: identical bytes; a failed document's bytes while a "
        "new file for it is queued).",
    )


class UploadResponse(BaseModel):
    batch_id: UUID
    tasks: list[TaskRef]
    warnings: list[str] = Field(
        default_factory=list,
        description="Sentences about what was accepted but may not be what was meant: several files of "
        "the same name (without replace=true, which refuses them) became documents sharing it. Empty "
        "when there is nothing to say.",
    )


class Document(BaseModel):
    id: UUID
    collection_id: UUID
    filename: str
    file_type: str
    content_type: str
    size_bytes: int
    sha256: str
    status: DocumentStatus
    error: str | None
    chunk_count: int
    metadata: dict[str, Any]
    version: int = Field(description="1, 2, ...: grows by one each time a replacement file is swapped in.")
    replaced_at: datetime | None = Field(description="When the current version replaced the previous one.")
    created_at: datetime
    updated_at: datetime


class DocumentTask(BaseModel):
    """A document's unfinished task (its upload's, or a new version's) and how far it is."""

    task_id: UUID
    batch_id: UUID
    status: Literal["queued", "processing"]
    total_chunks: int = Field(description="0 while the file is being read; then the chunks to embed.")
    completed_chunks: int = Field(description="Chunks embedded so far (written together at the end).")
    failures: int = Field(description="Errors so far (limit RAG_WORKER_MAX_ATTEMPTS).")
    error: str | None = Field(description="The last error, while the task waits to be tried again.")
    replaces_version: int | None = Field(
        description="A new version of the file: the version it supersedes once processed."
    )
    started_at: datetime | None


class DocumentDetail(Document):
    task: DocumentTask | None = Field(
        default=None,
        description="Its upload's or a replacement's task while it is queued or processing (a large file "
        "takes minutes: its progress), else null.",
    )


class DocumentList(BaseModel):
    items: list[Document]
    total: int
    limit: int
    offset: int


class BatchTask(BaseModel):
    task_id: UUID
    filename: str
    status: TaskStatus
    total_chunks: int
    completed_chunks: int
    attempts: int = Field(
        description="Deliveries: times a worker took the task, including times a worker died on it "
        "(limit RAG_WORKER_MAX_DELIVERIES)."
    )
    failures: int = Field(
        description="Times processing this document failed with an error (limit RAG_WORKER_MAX_ATTEMPTS)."
    )
    error: str | None
    document_id: UUID | None
    replaces_version: int | None = Field(
        default=None, description="A replacement: the document version it supersedes once processed."
    )
    started_at: datetime | None
    finished_at: datetime | None
    request_id: str | None = Field(
        default=None,
        description="X-Request-Id of the request that queued it (the upload, or a later retry): the id "
        "on the server's and the worker's log lines about it.",
    )


class BatchStatus(BaseModel):
    batch_id: UUID
    status: BatchState
    done: bool = Field(description="Every task is finished (completed, failed or duplicate).")
    created_at: datetime
    total: int
    counts: dict[TaskStatus, int]
    total_chunks: int
    completed_chunks: int
    tasks: list[BatchTask]


class FileDigest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(max_length=1000)
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class DuplicateCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: list[FileDigest] = Field(max_length=10_000)
    collection: CollectionRef = Field(
        default=DEFAULT_COLLECTION, description="Name or id; dedup is per collection."
    )


class DocumentSelection(BaseModel):
    """Which documents of one collection, as Chroma's delete(ids, where, where_document) names them: the
    ids, the metadata, the text, or several (then a document must be in the list and match them all)."""

    # A misspelt `metdata` beside `ids` would select the ids without the condition.
    model_config = ConfigDict(extra="forbid")
    action: ClassVar[str] = "select"  # what the refusal of an empty selection says it is for

    collection: CollectionRef = Field(default=DEFAULT_COLLECTION, description="Name or id")
    ids: list[UUID] | None = Field(default=None, min_length=1, max_length=1_000)
    metadata: MetadataMatch | None = Field(
        default=None,
        min_length=1,
        description=f"At least one key, and every key must match. {METADATA_MATCH_RULES}",
    )
    text: TextMatch | None = Field(
        default=None, description=f"On the document's chunks (one holding it is enough). {TEXT_MATCH_RULES}"
    )

    @model_validator(mode="after")
    def _names_documents(self) -> DocumentSelection:
        if self.ids is None and self.metadata is None and self.text is None:
            # Nothing to match on would mean every document: a whole collection is named outright.
            raise ValueError(f"name the documents to {self.action}: `ids`, `metadata`, `text`, or several")
        return self


def expected_count_field(done: str) -> Any:
    """The `expected_count` of a request acting on a selection: the caller's guard that the set acted on
    is the set it confirmed (ingestion/selection.py)."""
    return Field(
        default=None,
        description="The number of documents the caller confirmed (the web app's \"Select all N "
        f'matching"): counted once the selected documents are locked and the selection is matched again '
        f"under the locks, i.e. the documents that would be {done} (an id named that is no longer in the "
        "collection or no longer matches `metadata` and `text` does not count). Another number: a 409 "
        f"(`code` `selection_changed`) and nothing is {done}. Absent: no such check.",
    )


ExpectedCount = Annotated[int, Field(ge=0, le=1_000_000_000), NotBool]


class DeleteDocuments(DocumentSelection):
    """POST /documents/delete: Chroma's delete(ids, where, where_document) within one collection."""

    action: ClassVar[str] = "delete"

    expected_count: ExpectedCount | None = expected_count_field("deleted")


class DeletedDocuments(BaseModel):
    deleted: list[UUID] = Field(description="The documents deleted, with their bytes and chunks")
    not_deleted: list[UUID] = Field(
        description="Ids asked for but not deleted: not in the collection (gone already, or elsewhere), or "
        "not matching `metadata` or `text`"
    )


class NamedDocument(BaseModel):
    id: UUID
    status: DocumentStatus


class DuplicateResult(BaseModel):
    filename: str
    sha256: str
    duplicate: bool = Field(
        description="Already stored and ready; one failed (uploading re-queues it), queued or processing "
        "(its upload follows that document) is not."
    )
    document_id: UUID | None
    existing_filename: str | None
    status: DocumentStatus | None
    same_name: list[NamedDocument] = Field(
        default_factory=list,
        description="The collection's other documents of this file's name (other bytes): an upload without "
        "`replace` adds a document beside them; with it, the file becomes a new version of the one.",
    )
    bare_name: list[NamedDocument] = Field(
        default_factory=list,
        description="For a name with folders ('hr/benefits.txt') that no document has: the collection's "
        "documents named by its last part alone ('benefits.txt'), stored before documents were named by "
        "their path. An upload adds a document beside them, also with `replace` (PUT "
        "/documents/{id}/file makes a new version of one).",
    )


class DuplicateCheckResult(BaseModel):
    results: list[DuplicateResult]


class MetadataUpdate(BaseModel):
    """PATCH /documents/{id}: `replace` (default) makes `metadata` the document's whole metadata; `merge`
    sets its top-level keys on the current metadata, a key set to null removing it."""

    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, Any] = Field(
        description="A JSON object (string keys, at most 8 levels, at most 16 KiB as JSON)."
    )
    mode: Literal["replace", "merge"] = "replace"
    expected_metadata: dict[str, Any] | None = Field(
        default=None,
        description="The metadata as the caller last read it: the edit applies only if it is still that "
        "(else a 409, and nothing is written: read it again), so an edit made meanwhile by someone "
        "else is never overwritten unseen.",
    )


class DocumentMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: UUID
    metadata: dict[str, Any] = Field(description="As PATCH /documents/{id}'s `metadata`.")


class MetadataUpdates(BaseModel):
    """POST /documents/metadata, Chroma's update(ids, metadatas): several documents of one collection, each
    with its own metadata, in one transaction. `mode` as PATCH /documents/{id}'s, but `merge` by default,
    as Chroma's update (keys set, a null removing one; the others kept)."""

    model_config = ConfigDict(extra="forbid")

    collection: CollectionRef = Field(default=DEFAULT_COLLECTION, description="Name or id")
    documents: list[DocumentMetadata] = Field(min_length=1, max_length=1_000)
    mode: Literal["replace", "merge"] = "merge"

    @model_validator(mode="after")
    def _each_document_once(self) -> MetadataUpdates:
        seen: set[UUID] = set()
        for d in self.documents:
            if d.id in seen:
                # Which of two values would win is a guess: refused rather than chosen.
                raise ValueError(f"document {d.id} is named twice")
            seen.add(d.id)
        return self


class MetadataForSelection(DocumentSelection):
    """POST /documents/metadata/matching: one metadata value for every document of a collection that `ids`,
    `metadata`, `text` or several name (as POST /documents/delete selects them), in one transaction."""

    action: ClassVar[str] = "update"

    set: dict[str, Any] = Field(
        description="The metadata each selected document gets (as PATCH's `metadata`)."
    )
    mode: Literal["replace", "merge"] = "merge"
    expected_count: ExpectedCount | None = expected_count_field("updated")


class UpdatedDocuments(BaseModel):
    updated: list[UUID] = Field(description="The documents whose metadata was set, in id order")
    not_updated: list[UUID] = Field(
        description="Ids not in the collection (gone already, or elsewhere): nothing was changed for them"
    )


def task_message(task_id: UUID, document_id: UUID, request_id: str | None) -> dict[str, str]:
    """A task's queue message: what the worker needs, and the request id its log lines carry."""
    message = {"task_id": str(task_id), "document_id": str(document_id)}
    if request_id is not None:
        message["request_id"] = request_id
    return message
