"""The FastAPI application: start-up/shut-down and the list of routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from llama_index.core.llms import LLM

from rag_server import __version__
from rag_server.api.errors import install_error_handlers
from rag_server.api.routes import chat, collections, documents, health, search, tasks, upload
from rag_server.chat.service import ChatService
from rag_server.config import Settings, get_settings
from rag_server.infra.embeddings import Embedder
from rag_server.infra.runtime import open_runtime


def create_app(
    settings: Settings | None = None, *, embedder: Embedder | None = None, llm: LLM | None = None
) -> FastAPI:
    """The app; `embedder`/`llm` are handed to its Runtime (tests share one model between apps)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(
            settings, migrate=True, load_embedder=True, embedder=embedder, llm=llm
        ) as runtime:
            app.state.runtime = runtime
            # One per app: it holds the in-memory temporary sessions and in-flight answer writes.
            app.state.chat = ChatService(runtime)
            try:
                yield
            finally:
                await app.state.chat.drain()

    app = FastAPI(title="rag-server", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(collections.router)
    app.include_router(upload.router)
    app.include_router(tasks.router)
    app.include_router(documents.router)
    app.include_router(chat.router)
    app.include_router(search.router)
    return app
