"""Chat types shared by the API, the service and the chat store."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema

from rag_server.collections.models import CollectionRef
from rag_server.errors import ForbiddenError, NotFoundError
from rag_server.retrieval.models import (
    MAX_QUERY_CHARS,
    ChunkLocation,
    MinSimilarity,
    SearchFilters,
    SearchType,
)
from rag_server.text import CleanText, NotBlank, NotBool

Role = Literal["system", "user", "assistant"]
AnswerMode = Literal["llm", "extractive"]
# Why an answer ended, in OpenAI's words: "length" when the LLM reached the caller's max_tokens.
FinishReason = Literal["stop", "length", "content_filter"]

# A client-chosen session id (chat_sessions.external_id; migration 0006 checks the same shape).
EXTERNAL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_EXTERNAL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")  # used with fullmatch: no '$' newline
SESSION_ID_SHAPE = (
    "a session id is the server's UUID or a client-chosen id of 1-128 characters: letters, digits and "
    f"'.', '_', ':', '-', starting with a letter or digit ({EXTERNAL_ID_PATTERN})"
)
# Every session with an external id gets this id derived from (owner key, external id): two concurrent
# first uses of one name insert the same row, and ON CONFLICT DO NOTHING keeps one.
_EXTERNAL_NAMESPACE = uuid.UUID("5b0f7c3e-2f4a-4d8e-9a61-3c7e1d2b9f40")


def parse_session_ref(value: object) -> UUID | str:
    """A session id as a client sends it: whatever parses as a UUID is the server's id, anything else
    must have the external id shape (ValueError: a 422 stating the shape)."""
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        raise ValueError(SESSION_ID_SHAPE)
    try:
        return UUID(value)
    except ValueError:
        pass
    if not _EXTERNAL_ID.fullmatch(value):
        raise ValueError(SESSION_ID_SHAPE)
    return value


def parse_external_id(value: object) -> str:
    """A new external id: the shape, and not something that would be read back as a UUID."""
    ref = parse_session_ref(value)
    if isinstance(ref, UUID):
        raise ValueError(f"external_id must not be a UUID (a UUID names the server's id); {SESSION_ID_SHAPE}")
    return ref


def external_session_uuid(owner_key_id: UUID | None, external_id: str) -> UUID:
    return uuid.uuid5(_EXTERNAL_NAMESPACE, f"{owner_key_id or 'open'}/{external_id}")


_REF_SCHEMA = {
    "anyOf": [{"type": "string", "format": "uuid"}, {"type": "string", "pattern": EXTERNAL_ID_PATTERN}],
    "description": "The session's UUID, or the client-chosen id it was created with (external_id)",
}
# A session id in a path or body: UUID (the server's id) or str (a client-chosen external id).
SessionRef = Annotated[UUID | str, PlainValidator(parse_session_ref), WithJsonSchema(_REF_SCHEMA)]
ExternalId = Annotated[
    str,
    PlainValidator(parse_external_id),
    WithJsonSchema({"type": "string", "pattern": EXTERNAL_ID_PATTERN, "description": SESSION_ID_SHAPE}),
]


class Source(BaseModel):
    """One retrieved passage an answer may cite as [n]. Persisted in chat_messages.metadata."""

    n: int
    chunk_id: int
    document_id: UUID
    document_name: str
    page: int | None = None
    excerpt: str
    score: float
    # The headings above the passage ("Guide > Install > Linux"; a slide's title; a sheet's name) and
    # where it sits beyond the page (slide part, sheet rows); absent on answers stored before them.
    heading_path: str | None = None
    location: ChunkLocation | None = None
    # Set when history is read: the cited document has since been deleted (the excerpt stays).
    document_deleted: bool = False
    # The document's version the answer cited: set at retrieval time (live answers) and stored with the
    # answer (None: an answer stored before versions).
    document_version: int | None = None
    # Set when history is read: the document has been replaced since; the excerpt is from an earlier
    # version (document_version), the document is now at current_version.
    stale: bool = False
    current_version: int | None = None


SESSION_SEARCH_MAX = 200
SESSION_SEARCH_WORDS = 10
SESSION_SEARCH_RULES = (
    f"Up to {SESSION_SEARCH_WORDS} words ({SESSION_SEARCH_MAX} characters at most, not blank): a session "
    "matches when each word begins a word of its title or of one of its messages (questions and answers), "
    "ignoring case and Latin accents ('regen' finds 'Regeneration', 'cafe' finds 'Café')."
)


def _few_words(value: str) -> str:
    if len(set(value.split())) > SESSION_SEARCH_WORDS:
        raise ValueError(f"at most {SESSION_SEARCH_WORDS} words")
    return value


# GET /chat/sessions?q=: blank, too long or too many words is a 422 (no search is no `q`).
SessionSearch = Annotated[
    CleanText,
    NotBlank,
    AfterValidator(_few_words),
    Field(min_length=1, max_length=SESSION_SEARCH_MAX, description=SESSION_SEARCH_RULES),
]


class ChatSession(BaseModel):
    id: UUID
    title: str | None
    llm_model: str | None
    search_type: SearchType
    is_archived: bool
    is_temporary: bool
    created_at: datetime
    updated_at: datetime = Field(
        description="Its last change: a message written or cleared, a rename, an archive, a search type."
    )
    last_active_at: datetime = Field(
        description="Its last activity: its creation or its last message written (a rename, an archive or a "
        "clear is none). Sessions are listed most recently active first."
    )
    message_count: int = 0
    # The client-chosen id (None: only the server's id addresses it).
    external_id: str | None = None

    @classmethod
    def new(
        cls,
        *,
        title: str | None,
        search_type: SearchType,
        llm_model: str | None,
        is_temporary: bool,
        session_id: UUID | None = None,
        external_id: str | None = None,
    ) -> ChatSession:
        """A session not yet written anywhere: fresh id (unless given), no messages, created now."""
        now = datetime.now(UTC)
        return cls(
            id=session_id or uuid.uuid4(),
            external_id=external_id,
            title=title,
            llm_model=llm_model,
            search_type=search_type,
            is_archived=False,
            is_temporary=is_temporary,
            created_at=now,
            updated_at=now,
            last_active_at=now,
        )


class ChatMessageOut(BaseModel):
    id: int | None  # None for messages of a temporary session (never stored)
    role: Role
    content: str
    sources: list[Source] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="An answer's: answer_mode, search_type, llm_model, llm_error, condensed_query, and what "
        "it was drawn from: `collections` (ids) and `filters` (as the question sent them, when it did).",
    )
    created_at: datetime


class QueryRequest(BaseModel):
    # A misspelt option (`collection`, `filter`) is refused, not answered without it.
    model_config = ConfigDict(extra="forbid")

    query: Annotated[CleanText, NotBlank] = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    # A UUID: an existing session (unknown: 404). Any other id: the caller's own session name, created
    # on first use and continued afterwards.
    session_id: SessionRef | None = None
    # None: the session's search type.
    search_type: SearchType | None = None
    top_k: Annotated[int, Field(ge=1, le=50), NotBool] = 5
    filters: SearchFilters | None = None
    min_similarity: MinSimilarity | None = Field(
        default=None,
        description="Cite only passages whose cosine similarity with the question reaches this, or "
        "that hold every word of it (with their title and headings); none left: no relevant passages, "
        "and no LLM answer. Default: RAG_CHAT_MIN_SIMILARITY; -1 cites whatever search ranks.",
    )
    # Scopes this question's retrieval only; the session stores nothing about it.
    collections: list[CollectionRef] | None = Field(
        default=None, min_length=1, max_length=100, description="Names or ids; default: ['default']."
    )


class QueryResponse(BaseModel):
    answer: str
    answer_mode: AnswerMode
    sources: list[Source]
    session_id: UUID
    external_id: str | None = None  # the client-chosen id the session was addressed by, if any
    message_id: int | None  # the persisted assistant message; None for temporary sessions
    timings_ms: dict[str, float]
    # Present when an LLM is configured but failed: the answer is the extractive fallback.
    llm_error: str | None = None
    # The standalone question used for retrieval when a follow-up was condensed.
    condensed_query: str | None = None


def not_your_session(session_id: UUID) -> ForbiddenError:
    """Both stores' refusal of a turn in another key's session, which an admin may read but not continue:
    its answer could cite collections the owner's key may not read, and would show in their history."""
    return ForbiddenError(
        f"chat session {session_id} belongs to another API key: an admin may read, rename, archive or "
        "delete it, not answer in it"
    )


def session_not_found(session_id: UUID | str) -> NotFoundError:
    """The one 404 of both session stores (stored and temporary): same text whichever store looked."""
    return NotFoundError(f"chat session {session_id} not found")


class SessionList(BaseModel):
    sessions: list[ChatSession]
    total: int
    limit: int
    offset: int
