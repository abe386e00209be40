"""Request ids and the access log: `X-Request-Id` in, on every response out, on every log line between.

Pure ASGI and the outermost of our middleware (added last in api/app.py), so the header is on every
answer the app gives: errors (UnexpectedErrorMiddleware is inside it), 404s, SSE streams, the web app's
files, /mcp and /v1. A client's id is kept when usable (infra/log_context.py: visible ASCII, at most 128
characters), else replaced by a new one: never refused. An upload stores it on its tasks, so the worker's
lines for a task carry the id of the request that queued it.

One access line per request at INFO, after the response is done (a stream: when it ends): the route
template, never the path or query string (they can hold query text), method, status, duration.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_server.infra.log_context import accept_request_id, log_context
from rag_server.infra.metrics import route_template

HEADER = "X-Request-Id"
_HEADER_KEY = HEADER.lower().encode("latin-1")

access_logger = logging.getLogger("rag_server.api.access")


def client_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == _HEADER_KEY:
            return bytes(value).decode("latin-1")
    return None


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accept_request_id(client_request_id(scope))
        header = (_HEADER_KEY, request_id.encode("latin-1"))
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _HEADER_KEY]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        request_scope = dict(scope)
        started = time.perf_counter()
        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                # No status: the app raised before answering (Starlette's last resort answers 500).
                self._access(scope, request_scope, status or 500, time.perf_counter() - started)

    @staticmethod
    def _access(scope: Scope, request_scope: Scope, status: int, seconds: float) -> None:
        route = route_template(scope, request_scope)
        method = str(scope.get("method", ""))
        duration_ms = round(seconds * 1000, 1)
        access_logger.info(
            "%s %s %d %.1f ms",
            method,
            route or "(no route)",
            status,
            duration_ms,
            extra={"route": route, "method": method, "status": status, "duration_ms": duration_ms},
        )
