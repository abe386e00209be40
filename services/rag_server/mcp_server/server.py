"""The MCP server (official `mcp` SDK): the tools of tools.py over streamable HTTP at `/mcp` in the API
process (its transport: endpoint.py), or over stdio (`rag-server mcp`; stdio.py).

The SDK runs tool handlers in its session manager's own tasks, where the request's ContextVars are not
set, so each tool binds the principal's database scope itself from the request the SDK hands it, and
runs again on the primary when a read replica failed under it (a tool error is no 503 the HTTP
middleware could see).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from uuid import UUID

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp_types import CallToolResult, InputRequiredResult
from mcp_types import Tool as MCPTool
from pydantic import Field, StrictBool, ValidationError

from rag_server import __version__
from rag_server.access import keys
from rag_server.access.models import Principal
from rag_server.api.errors import clean_validation_errors
from rag_server.chat.service import ChatService
from rag_server.collections.models import CollectionRef
from rag_server.errors import (
    CollectionNotFoundError,
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    UnauthenticatedError,
)
from rag_server.infra.database import retry_sentence
from rag_server.infra.replicas import read_again_on_primary
from rag_server.infra.runtime import Runtime
from rag_server.infra.scoped_pool import bind_scope, reset_scope
from rag_server.ingestion.models import DocumentStatus, NamePart
from rag_server.mcp_server import tools
from rag_server.retrieval.metadata_match import METADATA_MATCH_RULES
from rag_server.retrieval.models import (
    MIN_SIMILARITY_RULE,
    MetadataMatch,
    MinSimilarity,
    SearchFilters,
    TextMatch,
)
from rag_server.retrieval.text_match import TEXT_MATCH_RULES
from rag_server.text import NotBool

T = TypeVar("T")
PRINCIPAL_KEY = "rag_server.principal"  # where McpEndpoint leaves the authenticated principal
INSTRUCTIONS = (
    "Search and question document collections. `search` returns passages with document names, ids, "
    "chunk ids, pages and scores; `ask` answers with [n] citations; `get_document` reads a document. "
    "Without `collection` the tools use `default`; `list_collections` names the ones you can read."
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    runtime: Runtime
    chat: ChatService
    # Over stdio, RAG_API_KEY: checked again at every tool call, so that a key revoked, or given other
    # collections, applies at once, as over HTTP, where every request brings its key.
    api_key: str | None = None


# A collection as the REST API takes one (1 to 100 characters, cleaned): list_documents looked up an
# empty name, and echoed a name of any length whole in its refusal.
CollectionArgument = Annotated[CollectionRef, Field(description="Name or id; default `default`")]

# What the request a tool builds (SearchRequest, QueryRequest) calls the tool's arguments: its refusals
# name the argument the assistant sent (they said `collections.0` for `collection`, `query` for `ask`'s
# `question`).
SEARCH_ARGUMENTS = {"collections": "collection", "search_type": "mode"}
ASK_ARGUMENTS = {**SEARCH_ARGUMENTS, "query": "question"}


@asynccontextmanager
async def _request_scope(
    ctx: Context, services: Services, arguments: Mapping[str, str] | None = None
) -> AsyncIterator[None]:
    """Bind the database scope of the caller's key for this tool call (the HTTP request's, or over stdio
    RAG_API_KEY's; without either, the runtime's scope), and turn domain errors into tool errors the
    assistant can read (`arguments`: the built request's field -> the tool's argument)."""
    try:
        request = ctx.request_context.request
    except ValueError:  # no request (a direct call)
        request = None
    principal: Principal | None = getattr(request, "scope", {}).get(PRINCIPAL_KEY)
    if principal is None and services.api_key is not None:
        try:
            principal = await keys.authenticate(services.runtime.pool, services.api_key, open_allowed=False)
        except UnauthenticatedError as exc:
            raise ToolError(f"RAG_API_KEY: {exc}") from exc
    token = bind_scope(principal.scope) if principal is not None else None
    try:
        yield
    except CollectionNotFoundError as exc:
        raise ToolError(f"{exc}: list_collections names the collections this key can read") from exc
    except (NotFoundError, InvalidInputError, ConflictError, ForbiddenError) as exc:
        raise ToolError(str(exc)) from exc
    except ValidationError as exc:  # what the tools build from their arguments refused them
        raise ToolError(invalid_arguments(exc, arguments)) from exc
    except Exception as exc:
        # A database that is unavailable or does not answer in time: the API's 503 sentence, where the
        # SDK would say only "Error executing tool" and the exception's text (a timeout's is empty).
        if (said := retry_sentence(exc)) is None:
            raise
        logger.warning("tool call failed: %s: %s: %s", said, type(exc).__name__, exc)
        raise ToolError(said) from exc
    finally:
        if token is not None:
            reset_scope(token)


def invalid_arguments(exc: ValidationError, arguments: Mapping[str, str] | None = None) -> str:
    """Arguments refused (by a tool's signature or the request it builds) as one readable line: each
    problem's field and message, without pydantic's type tags, echoed input and link."""
    problems = "; ".join(
        f"{'.'.join(map(str, loc))}: {e['msg']}"
        if (loc := _argument(e["loc"], arguments or {}))
        else e["msg"]
        for e in clean_validation_errors([dict(e) for e in exc.errors()])
    )
    return f"invalid arguments: {problems}"


def _argument(loc: Sequence[Any], arguments: Mapping[str, str]) -> list[Any]:
    """A built request's error location as the tool's argument: `collections.0` -> `collection` (the
    tool takes one), `query` -> `question`."""
    if not loc or loc[0] not in arguments:
        return list(loc)
    rest = list(loc[1:])
    if loc[0] == "collections" and rest and isinstance(rest[0], int):
        rest = rest[1:]
    return [arguments[loc[0]], *rest]


class _ReadableErrorsServer(MCPServer):
    """The SDK reports arguments that fail a tool's input schema with pydantic's whole text (type
    tags, the input, an errors.pydantic.dev link): the same readable line as the tools' own refusals.
    And it ignores arguments a tool does not have: a misspelt `colection` searched `default`, `topk`
    returned 10 hits. They are refused, as the REST API refuses unknown fields, and the schemas say so."""

    # Each tool's argument names, read once from the SDK's public tool list (tools are all registered
    # by build_mcp before the first call).
    _arguments: dict[str, frozenset[str]] | None = None

    async def list_tools(self) -> list[MCPTool]:
        listed = await super().list_tools()
        for tool in listed:
            tool.input_schema = {**tool.input_schema, "additionalProperties": False}
        return listed

    async def _arguments_of(self, name: str) -> frozenset[str] | None:
        if self._arguments is None:
            listed = await super().list_tools()
            self._arguments = {t.name: frozenset(t.input_schema.get("properties", {})) for t in listed}
        return self._arguments.get(name)

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        taken = await self._arguments_of(name)
        if taken is not None and (unknown := sorted(set(arguments) - taken)):
            known = ", ".join(sorted(taken))
            raise ToolError(
                f"Error executing tool {name}: invalid arguments: unknown argument"
                f"{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (this tool takes: {known})"
            )
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc, UnexpectedToolError) or not isinstance(exc.__cause__, ValidationError):
                raise
            refused = exc.__cause__
            raise ToolError(f"Error executing tool {name}: {invalid_arguments(refused)}") from refused


async def _read(
    ctx: Context,
    services: Services,
    call: Callable[[], Awaitable[T]],
    arguments: Mapping[str, str] | None = None,
) -> T:
    """A read-only tool call in the caller's scope, run again on the primary when a read replica failed
    under it."""
    async with _request_scope(ctx, services, arguments):
        return await read_again_on_primary(call)


def build_mcp(services: Callable[[], Services]) -> MCPServer:
    """The MCP server; `services` gives the Runtime and ChatService at call time (the app's lifespan
    makes them after this is built)."""
    mcp = _quiet_mcp_server()

    @mcp.tool(description="Search the documents (hybrid: BM25 + vectors). Hits name their document.")
    async def search(
        ctx: Context,
        query: Annotated[str, Field(min_length=1, max_length=20_000)],
        mode: tools.SearchMode = "hybrid",
        top_k: Annotated[int, Field(ge=1, le=100), NotBool] = 10,
        collection: CollectionArgument | None = None,
        filters: SearchFilters | None = None,
        min_similarity: Annotated[
            MinSimilarity | None,
            Field(description=f"{MIN_SIMILARITY_RULE} No hit then means nothing in the documents matches."),
        ] = None,
        highlight: Annotated[
            StrictBool,
            Field(
                description="Each hit's `highlights`: the [start, end) code-point offsets in its text of "
                "the words the query matched, as BM25 reads words."
            ),
        ] = False,
    ) -> tools.SearchResult:
        svc = services()
        runtime = svc.runtime
        return await _read(
            ctx,
            svc,
            lambda: tools.search_chunks(
                runtime, query, mode, top_k, collection, filters, min_similarity, highlight=highlight
            ),
            SEARCH_ARGUMENTS,
        )

    @mcp.tool(description="Answer a question from the documents, citing sources as [n]. Stores nothing.")
    async def ask(
        ctx: Context,
        question: Annotated[str, Field(min_length=1, max_length=20_000)],
        collection: CollectionArgument | None = None,
        mode: tools.SearchMode | None = None,
    ) -> tools.AskResult:
        svc = services()
        return await _read(ctx, svc, lambda: tools.ask(svc.chat, question, collection, mode), ASK_ARGUMENTS)

    @mcp.tool(description="List the collections this key can read, by name (the other tools' `collection`).")
    async def list_collections(
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=500), NotBool] = 100,
        offset: Annotated[int, Field(ge=0, le=2**31 - 1), NotBool] = 0,
    ) -> tools.CollectionListing:
        svc = services()
        return await _read(ctx, svc, lambda: tools.list_collections(svc.runtime, limit, offset))

    @mcp.tool(description="List the documents of a collection (default `default`), newest first.")
    async def list_documents(
        ctx: Context,
        collection: CollectionArgument = "default",
        status: DocumentStatus | None = None,
        limit: Annotated[int, Field(ge=1, le=500), NotBool] = 50,
        offset: Annotated[int, Field(ge=0, le=2**31 - 1), NotBool] = 0,
        name: NamePart | None = None,
        metadata: Annotated[
            MetadataMatch | None, Field(description=f"Every key must match. {METADATA_MATCH_RULES}")
        ] = None,
        text: Annotated[
            TextMatch | None, Field(description=f"A chunk of the document must match. {TEXT_MATCH_RULES}")
        ] = None,
    ) -> tools.DocumentListing:
        svc = services()
        return await _read(
            ctx,
            svc,
            lambda: tools.list_documents(
                svc.runtime, collection, status, limit, offset, name, metadata, text
            ),
        )

    @mcp.tool(
        description="A document's metadata and text: chunks start <= index < end (max 200), or with "
        "`text` only those of them whose text matches."
    )
    async def get_document(
        ctx: Context,
        document_id: UUID,
        start: Annotated[int, Field(ge=0, le=2**31 - 1), NotBool] = 0,
        end: Annotated[int | None, Field(ge=0, le=2**31 - 1), NotBool] = None,
        text: Annotated[
            TextMatch | None, Field(description=f"The chunk's own text must match. {TEXT_MATCH_RULES}")
        ] = None,
    ) -> tools.DocumentContent:
        svc = services()
        return await _read(ctx, svc, lambda: tools.get_document(svc.runtime, document_id, start, end, text))

    return mcp


def _quiet_mcp_server() -> _ReadableErrorsServer:
    """MCPServer() calls logging.basicConfig (a handler on the root logger when none is there yet):
    the server's logging is configured by the CLI/uvicorn, so take back whatever it added."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    mcp = _ReadableErrorsServer("rag-server", version=__version__, instructions=INSTRUCTIONS)
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    return mcp
