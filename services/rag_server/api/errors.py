"""Every error leaves the API as JSON `{"detail": ...}`; a database outage is a 503, never a 500 page."""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from rag_server.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    TooLargeError,
    UnsupportedTypeError,
)

logger = logging.getLogger(__name__)


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a lone surrogate in echoed input cannot be UTF-8 encoded and
    would turn a 422 into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


class ErrorResponse(BaseModel):
    """The body of every error the API answers: a readable sentence (422: the validation errors)."""

    detail: str


_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing or invalid API key",
    403: "The key's role may not do this",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Over a size or count limit",
    415: "Unsupported file type",
    422: "Invalid request",
    503: "The database is unavailable; retry shortly",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: the error statuses it can answer, declared in the OpenAPI document."""
    return {code: {"model": ErrorResponse, "description": _DESCRIPTIONS[code]} for code in codes}


_DOMAIN_STATUS: dict[type[Exception], int] = {
    NotFoundError: 404,
    ConflictError: 409,
    InvalidInputError: 422,
    TooLargeError: 413,
    UnsupportedTypeError: 415,
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return AsciiJSONResponse(status_code=422, content={"detail": jsonable_encoder(exc.errors())})

    async def domain_error(_: Request, exc: Exception) -> JSONResponse:
        return AsciiJSONResponse(status_code=_DOMAIN_STATUS[type(exc)], content={"detail": str(exc)})

    for error_type in _DOMAIN_STATUS:
        app.add_exception_handler(error_type, domain_error)

    @app.exception_handler(asyncpg.exceptions.CannotConnectNowError)
    @app.exception_handler(asyncpg.exceptions.ConnectionDoesNotExistError)
    @app.exception_handler(ConnectionError)
    @app.exception_handler(OSError)
    async def database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        logger.warning("database unavailable: %s", exc)
        return JSONResponse(status_code=503, content={"detail": "the database is unavailable, retry shortly"})
