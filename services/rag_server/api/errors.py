"""Every error leaves the API as JSON `{"detail": ...}`: a domain error with its status (and its `code`, when
it has one), a database that is unavailable right now as a 503, anything else unexpected as a 500
`{"detail": "internal error"}` (logged with its traceback) — never Starlette's plain-text 500 page."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_server.errors import (
    BusyError,
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PreviousResponseNotFoundError,
    ResponseNotFoundError,
    TooLargeError,
    UnauthenticatedError,
    UnsupportedTypeError,
)
from rag_server.infra.database import is_conflict_db_error, retry_sentence
from rag_server.infra.embeddings import EmbeddingError
from rag_server.openai_compat.errors import (
    OpenAIError,
    error_content,
    is_openai_operation_outside_v1,
    missing_v1_content,
    unknown_url_content,
    validation_error_content,
)

logger = logging.getLogger(__name__)


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a lone surrogate in echoed input cannot be UTF-8 encoded and
    would turn a 422 into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


# The `code`s a domain error may carry (errors.py): stable names a client may branch on.
ErrorCode = Literal[
    "collection_not_found",
    "document_busy",
    "selection_changed",
    "response_not_found",
    "previous_response_not_found",
]


class ErrorResponse(BaseModel):
    """The body of every error the API answers: a readable sentence (422: the validation errors)."""

    detail: str
    code: ErrorCode | None = Field(
        default=None,
        description="A stable name of the case, for clients to branch on (the sentence may change); "
        "absent when the status says enough. collection_not_found: a collection the request names does "
        "not exist, or the key may not read it (renamed or deleted meanwhile). document_busy (409): a "
        "document the request edits is being written (a new version's chunks): try again later. "
        "selection_changed (409): the documents a selection names are no longer as many as its "
        "`expected_count` (added, changed or deleted meanwhile): nothing was changed; list them again. "
        "response_not_found (/v1, in OpenAI's error shape): a stored response missing or not this key's; "
        "previous_response_not_found (/v1, 400): the same for `previous_response_id`.",
    )


class ValidationErrors(BaseModel):
    """FastAPI's 422 for a request that fails validation: the list of errors."""

    detail: list[dict[str, Any]]


_DESCRIPTIONS = {
    400: "Bad request",
    401: "No API key, or an unknown or revoked one",
    403: "The API key's role may not do this",
    404: "Not found",
    409: "Conflicts with what is stored",
    413: "Over a size or count limit",
    415: "Unsupported file type",
    422: "Invalid request",
    500: "An unexpected server error (logged with its traceback)",
    503: "The database is unavailable, or the request conflicted with a concurrent one; retry shortly",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: the error statuses it can answer, declared in the OpenAPI document."""
    return {code: {"model": ErrorResponse, "description": _DESCRIPTIONS[code]} for code in codes}


# Routes that answer 422 both from request validation (a list of errors) and from the domain (a sentence).
EITHER_422: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse | ValidationErrors, "description": _DESCRIPTIONS[422]}
}


# The OpenAI-compatible API answers its errors in OpenAI's shape (its clients parse it); 422 is a 400 there.
OPENAI_PREFIX = "/v1/"


def openai_error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {**_DESCRIPTIONS, 400: "Invalid request: a body that is not JSON or fails validation"}
    return {code: {"model": OpenAIError, "description": descriptions[code]} for code in codes}


def install_openapi(app: FastAPI) -> None:
    """FastAPI declares a 422 on every operation with parameters. /v1 never answers one (its validation
    errors are OpenAI's 400, declared by its routes), so its operations lose that 422."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        schema = default()  # built once and cached by FastAPI; the edits below are idempotent
        for path, item in schema.get("paths", {}).items():
            if is_openai_path(path):
                for operation in item.values():
                    if isinstance(operation, dict):
                        operation.get("responses", {}).pop("422", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# What FastAPI declares for a request that fails validation; declared by the routers that refuse unknown
# query parameters (deps.refuse_unknown_query, api/app.py) also on operations without parameters.
VALIDATION_422: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "Validation Error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
    }
}


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PREFIX) or path == OPENAI_PREFIX.rstrip("/")


def _error(
    request: Request,
    status: int,
    detail: str,
    headers: dict[str, str] | None = None,
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    # /v1 keeps OpenAI's shape and codes: there a collection is a model, and its 404 is `model_not_found`
    # (a stored response's is its own, `response_not_found`, or OpenAI's `previous_response_not_found`).
    if is_openai_path(request.url.path):
        content = error_content(status, detail, param)
        if code in (ResponseNotFoundError.code, PreviousResponseNotFoundError.code):
            content["error"]["code"] = code
    else:
        content = {"detail": detail} if code is None else {"detail": detail, "code": code}
    return AsciiJSONResponse(status_code=status, content=content, headers=headers)


_DOMAIN_STATUS: dict[type[Exception], int] = {
    UnauthenticatedError: 401,
    ForbiddenError: 403,
    PreviousResponseNotFoundError: 400,  # OpenAI's status, before its base's 404
    NotFoundError: 404,
    ConflictError: 409,
    InvalidInputError: 422,
    TooLargeError: 413,
    UnsupportedTypeError: 415,
    BusyError: 503,
}


# Pydantic names the member of a union an error is about in its location: a type ("str", "float",
# "constrained-int"), or a schema ("list[...]", "function-after[functools.partial(<function
# max_length_validator at 0x7f...>, ...)]": a constraint on an annotated type, with an address).
_MEMBER_TAG = re.compile(r"^(?:str|int|float|bool|bytes|none|constrained-[a-z]+|[a-z][a-z-]*\[.*\])$")
# Schemas, not anything a client sent: left out of locations (a dict key of that form would be too).
_SCHEMA_TAG = re.compile(r"^[a-z][a-z-]*\[.*\]$")
# "The input is not of this union member's type" (every member but the matching one says so).
_TYPE_ERRORS = frozenset(
    {
        "string_type",
        "int_type",
        "float_type",
        "bool_type",
        "list_type",
        "dict_type",
        "model_type",
        "model_attributes_type",
        "uuid_type",
        "bytes_type",
        "is_instance_of",
        "none_required",
    }
)
# Bound on what an error echoes of the request (a 30 MB query came back whole): inputs, location keys.
MAX_ECHO = 200


def clean_validation_errors(errors: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors as a client can read them, for every 422 (and /v1's 400), in one place:

    - a union's members that the input is not even the type of are left out when another member took
      it and found something wrong (`input: [""]` was "Input should be a valid string");
    - a validator's own sentence loses pydantic's "Value error, " prefix;
    - locations lose pydantic's schema names (they held a validator's repr with its address);
    - the input echoed, and a key in a location, are cut to MAX_ECHO characters.
    """
    kept = [error for error in errors if not _beside_the_matching_member(error, errors)]
    return [_readable(error) for error in kept or errors]


def _is_tag(part: Any) -> bool:
    return isinstance(part, str) and bool(_MEMBER_TAG.match(part))


def _rejects_its_type(error: dict[str, Any]) -> bool:
    """The error of a union member whose type the input is not (its location ends at the member)."""
    loc = error.get("loc", ())
    return error.get("type") in _TYPE_ERRORS and bool(loc) and _is_tag(loc[-1])


def _beside_the_matching_member(error: dict[str, Any], errors: Sequence[dict[str, Any]]) -> bool:
    if not _rejects_its_type(error):
        return False
    loc = tuple(error["loc"])
    union = loc[:-1]
    return any(
        not _rejects_its_type(other)
        and tuple(other.get("loc", ()))[: len(union)] == union
        and len(other["loc"]) > len(union)
        and _is_tag(other["loc"][len(union)])
        and other["loc"][len(union)] != loc[-1]
        for other in errors
    )


def _readable(error: dict[str, Any]) -> dict[str, Any]:
    error = dict(error)
    if error.get("type") == "value_error":  # a validator's own sentence, without pydantic's prefix
        error["msg"] = str(error.get("msg", "")).removeprefix("Value error, ")
    error["loc"] = [
        _bounded_text(part) if isinstance(part, str) else part
        for part in error.get("loc", ())
        if not (isinstance(part, str) and _SCHEMA_TAG.match(part))
    ]
    if "input" in error:
        error["input"] = _bounded_input(error["input"])
    return error


def _bounded_text(text: str) -> str:
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "..."


def _bounded_input(value: Any) -> Any:
    if isinstance(value, str):
        return _bounded_text(value)
    encoded = jsonable_encoder(value)
    if isinstance(encoded, int | float | bool) or encoded is None:
        return encoded
    text = json.dumps(encoded, ensure_ascii=False)
    # A container that fits is echoed as it came; a larger one as the start of its JSON text.
    return encoded if len(text) <= MAX_ECHO else _bounded_text(text)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = jsonable_encoder(clean_validation_errors(exc.errors()))
        if is_openai_path(request.url.path):
            return AsciiJSONResponse(status_code=400, content=validation_error_content(errors))
        return AsciiJSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI's own (e.g. a body that is not JSON: 400); /v1 answers them in OpenAI's shape.
        if exc.status_code == 400 and _caused_by_recursion(exc):
            # FastAPI's bare "There was an error parsing the body": json.loads gave up on the nesting.
            return _error(request, 400 if is_openai_path(request.url.path) else 422, TOO_DEEP_JSON)
        if not is_openai_path(request.url.path):
            if exc.status_code == 404 and is_openai_operation_outside_v1(request.url.path):
                return AsciiJSONResponse(missing_v1_content(request.method, request.url.path), 404)
            return await http_exception_handler(request, exc)
        if exc.status_code == 404:  # no such route (a model that does not exist is a domain 404)
            return AsciiJSONResponse(unknown_url_content(request.method, request.url.path), 404)
        return _error(request, exc.status_code, str(exc.detail), dict(exc.headers or {}) or None)

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette picks the handler by the exception's MRO; a subclass answers as its base does.
        status = next(_DOMAIN_STATUS[t] for t in type(exc).__mro__ if t in _DOMAIN_STATUS)
        if status == 422 and is_openai_path(request.url.path):
            status = 400
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if status == 503:
            headers = {"Retry-After": str(RETRY_AFTER_S)}
        return _error(
            request, status, str(exc), headers, getattr(exc, "param", None), getattr(exc, "code", None)
        )

    for error_type in _DOMAIN_STATUS:
        app.add_exception_handler(error_type, domain_error)

    @app.exception_handler(EmbeddingError)
    async def embedding_unavailable(request: Request, exc: EmbeddingError) -> JSONResponse:
        # A remote embedding service (Ollama, OpenAI-compatible) that is down or refuses us: the request
        # was fine, the service behind it is not, so retry later (or fix its settings) — not a bug of ours.
        logger.warning("embedding service failed: %s", exc.summary)  # not its answer: it may quote the query
        return _error(request, 503, f"the embedding service failed: {exc}")

    app.add_middleware(UnexpectedErrorMiddleware)


TOO_DEEP_JSON = (
    "The JSON body is nested too deeply to be read (about 1,000 levels of arrays and objects): no field of"
    " the API takes more than a few levels (a metadata match: 4 levels of $and / $or; metadata: 8)."
)


def _caused_by_recursion(exc: BaseException) -> bool:
    """json.loads raises RecursionError past its nesting limit; FastAPI raises its body's 400 from it."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain a few links long; never followed round a cycle
        if seen is None or isinstance(seen, RecursionError):
            return seen is not None
        seen = seen.__cause__ or seen.__context__
    return False


RETRY_AFTER_S = 5  # a 503 of a database that is unavailable or did not answer in time


def unexpected_error_response(exc: BaseException, path: str = "") -> JSONResponse:
    """503 when a retry may succeed (the database is unavailable or too slow right now, or the request
    lost a race: `retry_sentence` says which; a conflict is retryable like an outage, but the database
    is up, and the sentence says so), else a logged 500."""
    headers = None
    if (said := retry_sentence(exc)) is not None:
        logger.warning("%s: %s: %s", said, type(exc).__name__, exc)
        status, detail = 503, said
        # When to try again (clients and proxies honour it): at once after a lost race, else shortly.
        headers = {"Retry-After": "1" if is_conflict_db_error(exc) else str(RETRY_AFTER_S)}
    else:
        logger.error("unexpected error", exc_info=exc)
        status, detail = 500, "internal error"
    content = error_content(status, detail) if is_openai_path(path) else {"detail": detail}
    return JSONResponse(status_code=status, content=content, headers=headers)


class UnexpectedErrorMiddleware:
    """Answers the exceptions no handler took (they would reach Starlette's plain-text 500 page).

    Pure ASGI, inside Starlette's ServerErrorMiddleware: an exception handler for `Exception` would run in
    that middleware, which re-raises after answering (a second traceback in the server log). Once a
    response has started (a stream), the exception propagates: the status line is already gone.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except ClientDisconnect:
            # The client went away while its body was read (a tab closed mid-upload): nothing is wrong
            # here, and nobody reads the answer (the access line says 400, not 500 with a traceback).
            if not started:
                await JSONResponse({"detail": "the client went away before its request was read"}, 400)(
                    scope, receive, send
                )
        except Exception as exc:
            if started:
                raise
            await unexpected_error_response(exc, scope.get("path", ""))(scope, receive, send)
