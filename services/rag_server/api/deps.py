"""FastAPI dependencies: a route asks for the narrowest thing it uses (settings, pool, queue, chat)."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Query, Request

from rag_server.chat.service import ChatService
from rag_server.config import Settings
from rag_server.infra.queue import IngestQueue
from rag_server.infra.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


def get_pool(runtime: RuntimeDep) -> asyncpg.Pool:
    return runtime.pool


def get_queue(runtime: RuntimeDep) -> IngestQueue:
    return runtime.queue


def get_chat(request: Request) -> ChatService:
    # One per app (made by the lifespan): it holds the temporary sessions and in-flight answer writes.
    service: ChatService = request.app.state.chat
    return service


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
QueueDep = Annotated[IngestQueue, Depends(get_queue)]
ChatDep = Annotated[ChatService, Depends(get_chat)]

# Far below PostgreSQL's bigint (an OFFSET beyond it was a 500) and beyond any real listing.
MAX_OFFSET = 2**31 - 1
OffsetQuery = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip (paging)")]
