"""HEAD wherever GET works (HTTP requires it; uptime checkers use it), in one place for every route.

FastAPI's routes answer only the methods they declare, so a HEAD was a 405 on every GET route. Rather
than declare HEAD on each (and twice in the OpenAPI document), a HEAD request runs as the GET it stands
for and its body is dropped: the same status and headers (Content-Length included, as HTTP asks), no
body. A path without GET answers HEAD as it answers GET (405 with its Allow header, 404, 401...).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGetMiddleware:
    """Runs a HEAD request as a GET and sends its response without the body.

    The inner app sees a copy of the scope with method GET; the middlewares outside this one (access
    log, metrics) still see the HEAD. The GET routes answer finite bodies (no GET stream), which are
    read and dropped."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def send_headers_only(message: Message) -> None:
            nonlocal ended
            if message["type"] == "http.response.start":
                await send(message)
            elif message["type"] in ("http.response.body", "http.response.pathsend") and not ended:
                # The first part of the body (or a pathsend of a file) ends the response; the rest goes.
                ended = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        as_get = {**scope, "method": "GET"}
        try:
            await self.app(as_get, receive, send_headers_only)
        finally:
            # What routing found, for the middlewares outside that label metrics and access lines by
            # route (they would see no route and count every HEAD as unmatched).
            for key in ("route", "endpoint", "path_params"):
                if key in as_get:
                    scope[key] = as_get[key]
