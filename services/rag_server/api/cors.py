"""Web pages of other sites calling the API from a browser (CORS), for the origins an operator lists in
RAG_CORS_ORIGINS: a chat app in the browser speaking /v1, an MCP client in a web page, a team's own tool.

Off by default: a browser then lets no other site's page read an answer (the web app is served from the
API's own origin and needs none of this). Keys are sent as an `Authorization` header, never as cookies,
so no credentials mode is needed and a page must hold a key to read anything. With no key at all (open
mode, loopback) the API still answers no page of another site (access/exposure.py), whatever is listed.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from rag_server.config import Settings
from rag_server.read_after import READ_AFTER_HEADER

# What a page's script may read of an answer besides the simple headers: the request's id (for a bug
# report), an MCP session's id (streamable HTTP), read-your-writes' position, a 429's or 503's wait.
EXPOSED_HEADERS = ("X-Request-Id", "Mcp-Session-Id", READ_AFTER_HEADER, "Retry-After")
PREFLIGHT_MAX_AGE_S = 600


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Answer other sites' pages for RAG_CORS_ORIGINS. Call it after every other middleware: the
    outermost one, so a 401, a 413 or a 503 carries the headers too and the page can read why."""
    origins = settings.cors_origin_list
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
        # Any header a client sends (the openai SDK's x-stainless-*, MCP's protocol version): the key is
        # what guards the API, not the list of headers.
        allow_headers=["*"],
        allow_credentials=False,
        expose_headers=list(EXPOSED_HEADERS),
        max_age=PREFLIGHT_MAX_AGE_S,
    )
