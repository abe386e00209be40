"""FastAPI dependencies: a route asks for the narrowest thing it uses (settings, pool, queue, chat) and
for the role it needs (`require("editor")`): authenticating binds the key's database scope."""

from __future__ import annotations

from typing import Annotated, Any, get_args, get_origin

from fastapi import Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter, ValidationError

from rag_server.access import keys
from rag_server.access.exposure import is_loopback, open_mode_refusal
from rag_server.access.models import OPEN, Principal, Role
from rag_server.api.upload_budget import UploadBudget
from rag_server.api.upload_routes import is_upload
from rag_server.chat.service import ChatService
from rag_server.config import Settings
from rag_server.errors import ForbiddenError
from rag_server.infra.queue import IngestQueue
from rag_server.infra.runtime import Runtime
from rag_server.infra.scoped_pool import ScopedPool, bind_scope
from rag_server.retrieval.metadata_match import METADATA_MATCH_RULES
from rag_server.retrieval.models import MetadataMatch, TextMatch
from rag_server.retrieval.text_match import TEXT_MATCH_RULES


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


def get_pool(runtime: RuntimeDep) -> ScopedPool:
    return runtime.pool


def get_queue(runtime: RuntimeDep) -> IngestQueue:
    return runtime.queue


def get_chat(request: Request) -> ChatService:
    # One per app (made by the lifespan): it holds the temporary sessions and in-flight answer writes.
    service: ChatService = request.app.state.chat
    return service


def get_upload_budget(request: Request) -> UploadBudget:
    budget: UploadBudget = request.app.state.upload_budget
    return budget


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[ScopedPool, Depends(get_pool)]
QueueDep = Annotated[IngestQueue, Depends(get_queue)]
ChatDep = Annotated[ChatService, Depends(get_chat)]
UploadBudgetDep = Annotated[UploadBudget, Depends(get_upload_budget)]

# Far below PostgreSQL's bigint (an OFFSET beyond it was a 500) and beyond any real listing.
MAX_OFFSET = 2**31 - 1
OffsetQuery = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip (paging)")]

_METADATA_MATCH: TypeAdapter[MetadataMatch] = TypeAdapter(MetadataMatch)
_TEXT_MATCH: TypeAdapter[TextMatch] = TypeAdapter(TextMatch)
# Within a URL proxies pass (nginx: 8 KiB a request line) and HTTP clients build: httpx refuses a query
# over 64 KiB, and a character can take 12 bytes percent-encoded.
_JSON_QUERY_MAX = 4_000


def _json_query(adapter: TypeAdapter[Any], name: str, raw: str | None) -> Any:
    """A match given as JSON in the query string (FastAPI reads no dict from a query), refused as the
    other parameters are: a 422 located at `query.<name>`."""
    if raw is None:
        return None
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        located = [{**e, "loc": ("query", name, *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(located) from None


def metadata_query(
    metadata: Annotated[
        str | None,
        Query(
            max_length=_JSON_QUERY_MAX,
            description='JSON, e.g. {"team": "a"}: every key must match the metadata. '
            + METADATA_MATCH_RULES,
        ),
    ] = None,
) -> MetadataMatch | None:
    return _json_query(_METADATA_MATCH, "metadata", metadata)


def _text_parameter(meaning: str) -> Any:
    """The `text` query parameter (Chroma's where_document as JSON); `meaning`: what it selects."""
    description = f'JSON, e.g. {{"$contains": "insulin"}}: {meaning} {TEXT_MATCH_RULES}'
    return Query(max_length=_JSON_QUERY_MAX, description=description)


def text_query(
    text: Annotated[str | None, _text_parameter("a chunk of the document must match.")] = None,
) -> TextMatch | None:
    return _json_query(_TEXT_MATCH, "text", text)


def chunk_text_query(
    text: Annotated[str | None, _text_parameter("only the chunks whose own text matches.")] = None,
) -> TextMatch | None:
    return _json_query(_TEXT_MATCH, "text", text)


MetadataQuery = Annotated[MetadataMatch | None, Depends(metadata_query)]
TextQuery = Annotated[TextMatch | None, Depends(text_query)]
ChunkTextQuery = Annotated[TextMatch | None, Depends(chunk_text_query)]


# Declared as security schemes (the interactive docs get an "Authorize" button); checked below.
_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key")


async def authenticate(
    request: Request,
    runtime: RuntimeDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_api_key_header)],
) -> Principal:
    """The request's principal; from here on every query of the request runs under its scope. The open
    API (no key exists) refuses a web page of another site (access/exposure.py)."""
    presented = keys.presented_key(bearer.credentials if bearer is not None else None, header_key)
    open_allowed = is_loopback(runtime.settings.host)
    principal = await keys.authenticate(runtime.pool, presented, open_allowed=open_allowed)
    if principal is OPEN:
        refusal = open_mode_refusal(request.headers.get("host"), request.headers.get("origin"))
        if refusal is not None:
            raise ForbiddenError(refusal)
    bind_scope(principal.scope)  # api/app.py's ScopeMiddleware unbinds it when the request ends
    return principal


def require(role: Role) -> Any:
    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.can(role):
            raise ForbiddenError(f"this API key's role ({principal.role}) cannot do this: it needs {role}")
        return principal

    return Depends(check)


# For routes that use the principal itself; the others state their role with `require(...)`.
Reader = Annotated[Principal, require("reader")]


async def get_read_pool(
    runtime: RuntimeDep, principal: Annotated[Principal, Depends(authenticate)]
) -> ScopedPool:
    """For read-only routes: a read replica when one may serve this principal (it has replayed the
    principal's own writes and the position in X-Rag-Read-After, and is within the lag bound:
    infra/replicas.py), else the primary's pool. After `authenticate` (its scope names the principal)."""
    return runtime.read_pool()


ReadPoolDep = Annotated[ScopedPool, Depends(get_read_pool)]


async def refuse_unknown_query(
    request: Request, _authenticated: Annotated[Principal, Depends(authenticate)]
) -> None:
    """A query parameter the route does not take, or one it takes once given several times, is a 422,
    not ignored (or the last one taken) as FastAPI does: `POST /upload?collection=hr` stored the files in
    `default`, and a misspelt filter listed everything. After authentication: no key is a 401 first."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    taken = _query_fields(route.dependant)
    errors: list[dict[str, Any]] = []
    for name in dict.fromkeys(request.query_params):
        values = request.query_params.getlist(name)
        if name not in taken:
            takes = f"it takes {', '.join(sorted(taken))}" if taken else "it takes none"
            hint = " (the upload's fields are form fields)" if is_upload(route) else ""
            said = f"not a query parameter of this route: {takes}{hint}"
            errors += [
                {"type": "extra_forbidden", "loc": ("query", name), "msg": said, "input": v} for v in values
            ]
        elif len(values) > 1 and not _takes_many(taken[name].field_info.annotation):
            said = f"given {len(values)} times: give it once"
            errors.append({"type": "value_error", "loc": ("query", name), "msg": said, "input": values})
    if errors:
        raise RequestValidationError(errors)


def _query_fields(dependant: Dependant) -> dict[str, Any]:
    """The query parameters of a route and of every dependency it has, by name."""
    fields = {field.alias: field for field in dependant.query_params}
    for sub in dependant.dependencies:
        fields |= _query_fields(sub)
    return fields


def _takes_many(annotation: Any) -> bool:
    """Whether a parameter of this type is a list (`?id=1&id=2`), also inside Optional or Annotated."""
    origin = get_origin(annotation)
    if origin in (list, set, frozenset, tuple):
        return True
    return any(_takes_many(arg) for arg in get_args(annotation)) if origin is not None else False
