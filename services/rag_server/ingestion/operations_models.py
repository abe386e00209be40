"""API types of pipeline administration (ingestion/operations.py, ingestion/archive.py): what the admin
routes and `rag-server tasks|queue` show."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from rag_server.collections.models import CollectionRef
from rag_server.ingestion.models import TaskStatus

# Why a task does not move, as the listing says it (`stuck`).
STUCK_DEAD_WORKER = "its worker {worker_id} is not running"
STUCK_NO_MESSAGE = "its queue message is missing"


class AdminTask(BaseModel):
    task_id: UUID
    batch_id: UUID
    collection_id: UUID
    collection: str
    document_id: UUID | None
    filename: str
    status: TaskStatus
    attempts: int = Field(description="Deliveries of its current queue message (reset by a retry).")
    failures: int = Field(description="Errors the document caused (reset by a retry).")
    error: str | None
    worker_id: int | None = Field(description="The worker processing it (its liveness lock).")
    msg_id: int | None
    stuck: str | None = Field(
        description="Why it does not move, when it does not: a processing task whose worker is not "
        "running, or a queued task whose queue message is missing. Null otherwise."
    )
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    request_id: str | None = Field(
        default=None,
        description="X-Request-Id of the request that queued it last (the upload, or the retry that "
        "queued it again): the id on the server's and the worker's log lines about it.",
    )


class AdminTaskList(BaseModel):
    items: list[AdminTask]
    total: int
    retryable: int = Field(
        description="Of the tasks the filters select (every page), how many a retry would queue again "
        "now: failed ones whose document is still there with its file, not ready nor queued again (one "
        "per document). POST /admin/tasks/retry skips the other failed ones, saying why."
    )
    limit: int
    offset: int


class TaskSelection(BaseModel):
    """Every task of one batch, or of one collection, in the status the action applies to."""

    model_config = ConfigDict(extra="forbid")

    batch_id: UUID | None = None
    collection: CollectionRef | None = Field(default=None, description="A collection's name or id.")

    @model_validator(mode="after")
    def _exactly_one(self) -> TaskSelection:
        if (self.batch_id is None) == (self.collection is None):
            raise ValueError("name exactly one of batch_id and collection")
        return self


class RetrySelection(TaskSelection):
    """Every failed task of one batch, of one collection, or (`all`) of every collection the caller's
    key reaches (row-level security: never another's)."""

    all: StrictBool = Field(
        default=False, description="true: every failed task (of every collection the key reaches)."
    )
    status: Literal["failed"] = Field(default="failed", description="Only failed tasks are retried.")

    @model_validator(mode="after")
    def _exactly_one(self) -> RetrySelection:  # replaces TaskSelection's: `all` is a third choice
        if [self.batch_id is not None, self.collection is not None, self.all].count(True) != 1:
            raise ValueError('name exactly one of batch_id, collection and "all": true')
        return self


class CancelSelection(TaskSelection):
    status: Literal["queued"] = Field(default="queued", description="Only queued tasks are cancelled.")


class SkippedTask(BaseModel):
    task_id: UUID
    reason: str


# Tasks a bulk answer lists of each kind (done, skipped): retrying every failed task of a large store
# listed them all, however many (review L7). Its counts stay exact.
MAX_LISTED = 1000

T = TypeVar("T")


@dataclass
class Listed(Generic[T]):
    """Items counted, the first MAX_LISTED of them kept."""

    items: list[T] = field(default_factory=list)
    count: int = 0

    def add(self, item: T) -> None:
        self.count += 1
        if len(self.items) < MAX_LISTED:
            self.items.append(item)


class BulkTaskResult(BaseModel):
    done: list[UUID] = Field(
        description=f"The tasks retried (queued again) or cancelled, in id order: the first {MAX_LISTED:,} "
        "(`done_count`: all of them)."
    )
    skipped: list[SkippedTask] = Field(
        description=f"Tasks selected but left as they were, and why: the first {MAX_LISTED:,} "
        "(`skipped_count`)."
    )
    done_count: int = Field(description="How many tasks were retried or cancelled.")
    skipped_count: int = Field(description="How many tasks were left as they were.")
    truncated: bool = Field(
        description=f"true: `done` or `skipped` lists only the first {MAX_LISTED:,} of its tasks (the "
        "counts are exact)."
    )

    @classmethod
    def of(cls, done: Listed[UUID], skipped: Listed[SkippedTask]) -> BulkTaskResult:
        return cls(
            done=done.items,
            skipped=skipped.items,
            done_count=done.count,
            skipped_count=skipped.count,
            truncated=done.count > len(done.items) or skipped.count > len(skipped.items),
        )


class ArchivedMessage(BaseModel):
    msg_id: int
    read_ct: int = Field(description="Deliveries of the message before it was archived.")
    enqueued_at: datetime
    archived_at: datetime
    message: Any
    task_id: UUID | None = Field(description="The task it names, when that task still exists.")
    task_status: TaskStatus | None
    document_id: UUID | None
    filename: str | None
    error: str | None = Field(description="The task's error (why it failed or was cancelled).")


class ArchiveList(BaseModel):
    items: list[ArchivedMessage]
    total: int
    limit: int
    offset: int


class ArchivePurge(BaseModel):
    deleted: int
