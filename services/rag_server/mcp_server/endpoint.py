"""MCP over streamable HTTP at `/mcp` in the API process: `McpEndpoint` authenticates every request with
the API's keys before the SDK sees it (401 with `WWW-Authenticate: Bearer`; open mode as in the REST
API; a database that does not answer: 503) and leaves the principal in the ASGI scope for the tools
(server.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from rag_server.access import keys
from rag_server.access.exposure import is_loopback, open_mode_refusal
from rag_server.access.models import OPEN
from rag_server.config import ANY_ORIGIN
from rag_server.errors import UnauthenticatedError
from rag_server.infra.database import retry_sentence
from rag_server.infra.runtime import Runtime
from rag_server.mcp_server.server import PRINCIPAL_KEY

logger = logging.getLogger(__name__)


def http_session_manager(
    mcp: MCPServer, host: str, cors_origins: Sequence[str] = ()
) -> StreamableHTTPSessionManager:
    """Stateless JSON-response transport: every POST stands alone (authenticated on its own, no
    session to hijack or reap). Loopback servers get the SDK's DNS-rebinding protection, which lets
    pages of loopback origins in, and those RAG_CORS_ORIGINS lists by name (its `*` it cannot express);
    with no key (the open API) McpEndpoint refuses every other site's page, as the REST API does."""
    security = None
    if is_loopback(host):
        listed = [origin for origin in cors_origins if origin != ANY_ORIGIN]
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*", *listed],
        )
    # streamable_http_app() is how the SDK builds its session manager; its Starlette app is not used.
    mcp.streamable_http_app(stateless_http=True, json_response=True, transport_security=security)
    return mcp.session_manager


@asynccontextmanager
async def running(manager: StreamableHTTPSessionManager) -> AsyncIterator[None]:
    """The session manager's `run()` for the app's lifespan. Its task group must be entered and left by
    one task, and a lifespan may start and end in different tasks (pytest-asyncio's fixtures do): a
    task of its own holds it."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with manager.run():
            started.set()
            await stop.wait()

    holder = asyncio.create_task(hold(), name="mcp-session-manager")
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait({holder, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if holder.done():
        waiting.cancel()
        holder.result()  # it failed to start: raise that
    try:
        yield
    finally:
        stop.set()
        await holder


class McpEndpoint:
    """ASGI endpoint for `/mcp`: authenticate with the API's keys, then hand over to the SDK."""

    def __init__(self, runtime: Callable[[], Runtime], manager: StreamableHTTPSessionManager):
        self.runtime = runtime
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            # Stateless with JSON responses: no session to DELETE and no SSE stream a GET could open (the
            # SDK would answer GET with an event stream that never sends anything nor ends). The
            # streamable-HTTP spec: a server offering no stream answers GET with 405.
            response = JSONResponse(
                {"detail": f"{scope['method']} is not allowed on /mcp: send MCP messages with POST"},
                405,
                headers={"Allow": "POST"},
            )
            await response(scope, receive, send)
            return
        runtime = self.runtime()
        headers = Headers(scope=scope)
        try:
            principal = await keys.authenticate(
                runtime.pool, _presented_key(headers), open_allowed=is_loopback(runtime.settings.host)
            )  # _presented_key is inside the try: two different keys are a 401 too
        except UnauthenticatedError as exc:
            response = JSONResponse(
                error_body(UNAUTHENTICATED, str(exc)), 401, headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        except Exception as exc:  # the key's check needs the database: the API's 503, said to the client
            if (said := retry_sentence(exc)) is None:
                raise
            logger.warning("%s: %s: %s", said, type(exc).__name__, exc)
            await JSONResponse(error_body(UNAVAILABLE, said), 503)(scope, receive, send)
            return
        if principal is OPEN:
            # The open API answers no page of another site, listed in RAG_CORS_ORIGINS or not: the SDK's
            # origin check below lets listed ones in (for keyed requests), so it is not enough here.
            refusal = open_mode_refusal(headers.get("host"), headers.get("origin"))
            if refusal is not None:
                await JSONResponse(error_body(FORBIDDEN, refusal), 403)(scope, receive, send)
                return
        scope[PRINCIPAL_KEY] = principal
        await self.manager.handle_request(scope, receive, send)


# Implementation-defined JSON-RPC server errors (-32000..-32019; the SDK's own are -32000 and -32001).
MCP_PATH = "/mcp"
INVALID_REQUEST = -32600  # JSON-RPC's own: a request too large to read
UNAUTHENTICATED = -32010
UNAVAILABLE = -32011  # the database is unavailable or did not answer in time: retry
FORBIDDEN = -32012  # the open API (no key exists) refuses a web page of another site


def error_body(code: int, message: str) -> dict[str, Any]:
    """A refusal's body (401, 503): a JSON-RPC error, which the SDK's client reports with its message (any
    other body became "Server returned an error response", the reason lost), and `detail` as the REST
    API has it."""
    return {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}, "detail": message}


def _presented_key(headers: Headers) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    bearer = credentials.strip() if scheme.lower() == "bearer" else None
    return keys.presented_key(bearer, headers.get("x-api-key"))
