"""Serving the web app: `/` is the app shell, `/assets/*` its modules and styles, all same-origin.

Every response carries a Content-Security-Policy that allows only this origin's scripts and styles
(no inline script or style, no eval), so text from a document, a model or the server can never run.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Not hashed file names: the browser revalidates (ETag) instead of running a stale module.
    "Cache-Control": "no-cache",
}


class _Assets(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount_web_app(app: FastAPI) -> None:
    """`GET /` answers the app shell; the app routes by the URL's fragment (`#/chat/<id>`), so no API
    path is ever shadowed by a page."""

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=SECURITY_HEADERS)

    app.mount("/assets", _Assets(directory=STATIC_DIR / "assets"), name="assets")
