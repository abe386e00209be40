"""`rag-server mcp`: the MCP tools over stdio, for an assistant that starts the server itself.

The process opens its own Runtime on the database (no API server needed). Its database scope is
RAG_API_KEY's when one is set (the key's collections and role, checked like the API does: at start-up,
and again at every tool call, so that a revoked key stops at once), else the system scope: every
collection, as for the other CLI commands. stdout carries only the protocol; logs go to stderr.
"""

from __future__ import annotations

import asyncio
import sys

from rag_server.access import keys
from rag_server.chat.service import ChatService
from rag_server.config import Settings
from rag_server.errors import UnauthenticatedError
from rag_server.infra.runtime import open_runtime
from rag_server.infra.scoped_pool import bind_scope
from rag_server.mcp_server.server import Services, build_mcp


async def serve_stdio(settings: Settings) -> None:
    # An assistant waits on each tool call like a request: the API server's bound on a statement.
    async with open_runtime(
        settings, migrate=True, db_timeout_s=settings.api_db_timeout_s or None
    ) as runtime:
        if settings.api_key is not None:
            if not settings.api_key.get_secret_value().strip():
                raise UnauthenticatedError(
                    "it is empty: set it to an API key (`rag-server keys create`), or unset it"
                )
            principal = await keys.authenticate(
                runtime.pool, settings.api_key.get_secret_value(), open_allowed=False
            )
            # Bound before the SDK starts its tasks: they copy this context, so every tool runs under it.
            bind_scope(principal.scope)
        chat = ChatService(runtime)
        key = None if settings.api_key is None else settings.api_key.get_secret_value()
        mcp = build_mcp(lambda: Services(runtime, chat, key))
        try:
            await mcp.run_stdio_async()
        finally:
            await chat.drain()


def run_stdio(settings: Settings) -> int:
    try:
        asyncio.run(serve_stdio(settings))
    except UnauthenticatedError as exc:
        print(f"rag-server mcp: RAG_API_KEY: {exc}", file=sys.stderr)
        return 2
    return 0
