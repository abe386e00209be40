"""Which routes are uploads: those whose request body is multipart/form-data, as each declares where it is
defined. Their bodies get RAG_MAX_UPLOAD_REQUEST_BYTES (api/body_limit.py) and an unknown query
parameter's 422 says their fields are form fields (deps.refuse_unknown_query). Both ask the routes
themselves: the body limit kept its own copy of their paths, so a renamed or new upload route would have
fallen under the small bound without a word."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeGuard

from fastapi import params
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

MULTIPART = "multipart/form-data"


def multipart_body(schema: dict[str, Any]) -> dict[str, Any]:
    """The `openapi_extra` of a route that reads its multipart body itself (once the key is checked, with
    the limits of ingestion/upload.py): what it reads, for the OpenAPI, and the mark of an upload."""
    return {"requestBody": {"content": {MULTIPART: {"schema": schema}}}}


def is_upload(route: BaseRoute) -> TypeGuard[APIRoute]:
    """Its OpenAPI body is multipart: declared by `multipart_body`, or by `File(...)` parameters (FastAPI
    then reads the body itself)."""
    if not isinstance(route, APIRoute):
        return False
    declared = (route.openapi_extra or {}).get("requestBody", {}).get("content", {})
    info = route.body_field.field_info if route.body_field is not None else None
    return MULTIPART in declared or (isinstance(info, params.Body) and info.media_type == MULTIPART)


class UploadRoutes:
    """The upload routes among `routes`, found once (api/app.py); `matches` runs on every request, before
    routing. A route matches by its own path: the URL's when its router is included without a prefix."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self.routes = tuple(route for route in routes if is_upload(route))
        # Most requests are GETs: told apart without matching a path.
        self.methods = frozenset(method for route in self.routes for method in route.methods or ())

    def matches(self, scope: Scope) -> bool:
        if scope["method"] not in self.methods:
            return False
        if self._matches(scope):
            return True
        # The router answers `/upload/` with a redirect to `/upload` (307, the body unread); refused as a
        # request of the small bound first, a large upload would get a 413 instead.
        path: str = scope["path"]
        return path != "/" and path.endswith("/") and self._matches({**scope, "path": path.rstrip("/")})

    def _matches(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] is Match.FULL for route in self.routes)
