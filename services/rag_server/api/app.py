"""The FastAPI application: start-up/shut-down and the list of routers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from llama_index.core.llms import LLM
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from rag_server import __version__
from rag_server.access.exposure import prepare_access
from rag_server.api.body_limit import BodyLimitMiddleware
from rag_server.api.cors import install_cors
from rag_server.api.deps import refuse_unknown_query
from rag_server.api.disconnect import CancelOnDisconnectMiddleware
from rag_server.api.errors import VALIDATION_422, install_error_handlers, install_openapi
from rag_server.api.head import HeadAsGetMiddleware
from rag_server.api.read_routing import ReadRoutingMiddleware
from rag_server.api.request_id import RequestIdMiddleware
from rag_server.api.routes import (
    admin,
    chat,
    collections,
    documents,
    health,
    keys,
    metrics,
    openai_compat,
    search,
    status,
    tasks,
    upload,
)
from rag_server.api.upload_budget import UploadBudget
from rag_server.api.upload_routes import UploadRoutes
from rag_server.chat.service import ChatService
from rag_server.config import Settings, get_settings
from rag_server.infra.embeddings import Embedder
from rag_server.infra.heap import startup_heap_frozen
from rag_server.infra.metrics import Metrics, MetricsMiddleware
from rag_server.infra.runtime import open_runtime
from rag_server.infra.scoped_pool import SYSTEM_SCOPE, bind_scope, reset_scope
from rag_server.mcp_server.endpoint import MCP_PATH, McpEndpoint, http_session_manager, running
from rag_server.mcp_server.server import Services, build_mcp
from rag_server.web.serve import mount_web_app

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
    llm: LLM | None = None,
    migrate: bool = True,
) -> FastAPI:
    """The app; `embedder`/`llm` are handed to its Runtime (tests share one model between apps).
    `migrate`: at start-up (False: its caller did, as serve_api)."""
    settings = settings or get_settings()
    # MCP over streamable HTTP at /mcp: same process, same Runtime and ChatService as the REST API.
    mcp = build_mcp(lambda: Services(app.state.runtime, app.state.chat))
    mcp_sessions = http_session_manager(mcp, settings.host, settings.cors_origin_list)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # scope=None: a query sees no row until the request's key binds its scope (api/deps.py).
        async with open_runtime(
            settings,
            migrate=migrate,
            load_embedder="queries",
            embedder=embedder,
            llm=llm,
            scope=None,
            read_replicas=True,
            db_timeout_s=settings.api_db_timeout_s or None,
        ) as runtime:
            token = bind_scope(SYSTEM_SCOPE)
            try:
                await prepare_access(runtime.pool, settings)
            finally:
                reset_scope(token)
            app.state.runtime = runtime
            # Built now, in a thread: built by the first chat request, its imports (seconds on a busy
            # machine) held the event loop, and every request of the server waited (a 5 s client timeout
            # ran out in CI on the first POST /chat/sessions).
            chat_llm, problem = await asyncio.to_thread(runtime.chat_llm)
            if problem is not None:
                logger.warning("%s", problem)
            elif chat_llm is not None:
                logger.info("chat answers come from the LLM %s", chat_llm.metadata.model_name)
            # One per app: it holds the in-memory temporary sessions and in-flight answer writes.
            app.state.chat = ChatService(runtime)
            # Last: everything loaded by now lives as long as the server.
            with startup_heap_frozen():
                try:
                    async with running(mcp_sessions):
                        yield
                finally:
                    await app.state.chat.drain()

    app = FastAPI(title="rag-server", version=__version__, lifespan=lifespan)
    # Ours: they refuse unknown query parameters (below), and the body limit finds the uploads among them.
    own_routers = (
        status.router,
        collections.router,
        keys.router,
        upload.router,
        tasks.router,
        admin.router,
        documents.router,
        chat.router,
        search.router,
    )
    install_error_handlers(app)
    # Inside HEAD's (it sees a GET), outside the error handlers: a read-only request whose client left
    # is cancelled, its statement with it (api/disconnect.py).
    app.add_middleware(CancelOnDisconnectMiddleware)
    # Outside the error handlers' middleware (its answers lose their body too), inside the others.
    app.add_middleware(HeadAsGetMiddleware)
    install_openapi(app)
    # Inside ScopeMiddleware: it sees the scope authentication bound (api/read_routing.py).
    # Outside the error handlers (installed above, so inner): it sees a replica's failure as a 503 and
    # can run a read-only request again on the primary before anything is sent.
    app.add_middleware(ReadRoutingMiddleware)
    app.add_middleware(ScopeMiddleware)
    # Outside everything that reads a body: FastAPI parses one before authenticating.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_upload_request_bytes,
        # The routes as declared: FastAPI may keep an included router whole in app.routes (0.165 does).
        # Included without a prefix, so a route's own path is its URL's.
        uploads=UploadRoutes(route for router in own_routers for route in router.routes),
    )
    app.state.upload_budget = UploadBudget(settings.upload_memory_bytes)
    # Prometheus (GET /metrics): this app's own registry; around every route, so it times whole requests.
    app.state.metrics = Metrics()
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestIdMiddleware)  # outermost but CORS: its header is on every answer
    install_cors(app, settings)  # added last = outermost: other sites' pages can read every answer
    # Probes and scrapers (health, metrics) may add parameters of their own, and answer without a key.
    app.include_router(metrics.metrics_router(settings.metrics_public))
    app.include_router(health.router)
    for router in own_routers:
        app.include_router(router, dependencies=[Depends(refuse_unknown_query)], responses=VALIDATION_422)
    # Not /v1: OpenAI's clients may send query parameters of OpenAI's or Azure's (`api-version`).
    app.include_router(openai_compat.router)
    # A plain route, not in the OpenAPI (MCP speaks JSON-RPC); it authenticates like the API.
    app.router.routes.append(
        Route(MCP_PATH, McpEndpoint(lambda: app.state.runtime, mcp_sessions), include_in_schema=False)
    )
    mount_web_app(app)
    return app


class ScopeMiddleware:
    """Every request starts with no database scope and leaves none behind: authentication binds the
    key's scope in the request's context (api/deps.py), this unbinds it when the response is done (an
    in-process client, e.g. httpx's ASGITransport, runs requests in its own task and context)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = bind_scope(None)
        try:
            await self.app(scope, receive, send)
        finally:
            reset_scope(token)
