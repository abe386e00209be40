"""A bound on every request body but an upload's: RAG_MAX_REQUEST_BYTES.

FastAPI reads and parses a route's JSON body before it runs any dependency, authentication included, so
without a bound anyone who could reach the port made the server hold and parse a body of any size: 200 MB
of `[1,1,...]` with no key took the API process from 0.3 to 1.5 GB before its 401. A Content-Length over
the bound is a 413 before a byte is read; a body sent without one (chunked) is read up to the bound and
then refused the same way. The uploads (the routes taking a multipart body: api/upload_routes.py) have
their own bound, RAG_MAX_UPLOAD_REQUEST_BYTES: their routes refuse a Content-Length over it once the key is
checked (ingestion/upload.py), and a body sent without one is counted here as it streams in (it was read to
its end, the files spooled to disk, before the 413: an editor could fill the disk).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_server.api.errors import is_openai_path
from rag_server.api.upload_routes import UploadRoutes
from rag_server.ingestion.upload import upload_over_limit
from rag_server.mcp_server.endpoint import INVALID_REQUEST, MCP_PATH, error_body
from rag_server.openai_compat.errors import error_content


class BodyLimitMiddleware:
    """`uploads`: the app's upload routes, found once all its routes are in (api/app.py)."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int, uploads: UploadRoutes) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes
        self.uploads = uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = self.uploads.matches(scope)
        limit = self.max_upload_bytes if upload else self.max_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if not upload and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, send, upload)
            return
        received = 0
        refused = False
        started = False

        async def bounded_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > limit:
                    # Answered here (unless the app already began its answer); the app sees a client
                    # gone and whatever it sends next is dropped.
                    refused = True
                    if not started:
                        await self._refuse(scope, send, upload)
            return {"type": "http.disconnect"} if refused else message

        async def send_unless_refused(message: Message) -> None:
            nonlocal started
            if not refused:
                started = True
                await send(message)

        await self.app(scope, bounded_receive, send_unless_refused)

    async def _refuse(self, scope: Scope, send: Send, upload: bool) -> None:
        if upload:
            detail = upload_over_limit(self.max_upload_bytes)
        else:
            detail = (
                f"The request body is over the limit of {self.max_bytes:,} bytes (RAG_MAX_REQUEST_BYTES); "
                "files go to POST /upload."
            )
        body = json.dumps(_content(scope["path"], detail)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content(path: str, detail: str) -> dict[str, Any]:
    """The refusal in the shape each API's clients read: OpenAI's error on /v1, a JSON-RPC error on
    /mcp (the SDKs show its message; any other body loses it), else `{"detail": ...}`."""
    if is_openai_path(path):
        return error_content(413, detail)
    if path.rstrip("/") == MCP_PATH:
        return error_body(INVALID_REQUEST, detail)
    return {"detail": detail}
