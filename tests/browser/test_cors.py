"""A web page of another site calling the API from Chromium (RAG_CORS_ORIGINS, api/cors.py): a page of a
listed origin reads answers (and why it was refused), one of any other origin reads nothing, and /mcp
lets the listed page in on a loopback server (the MCP SDK's own origin check)."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.browser.conftest import ADMIN_KEY, Console, chromium_path, new_page
from tests.support.mcp_wire import INITIALIZE, MCP_HEADERS
from tests.support.processes import Proc, process_env, start_server

PAGE = b"<!doctype html><title>another site</title><p>a chat app of another site</p>"


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: object) -> None:
        pass


# Sites' names, which this module's Chromium resolves to 127.0.0.1: a page of a named site, not of a
# loopback address (the MCP SDK lets loopback origins in by itself). Served from loopback, not by the
# browser's routing: Chromium asks a person before a page whose address it does not know reaches a
# loopback one (Local Network Access), which a page on loopback never needs.
RESOLVE_TO_LOOPBACK = "--host-resolver-rules=MAP *.test 127.0.0.1"


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(
            executable_path=chromium_path(), args=[RESOLVE_TO_LOOPBACK]
        )
        yield instance
        await instance.close()


@contextmanager
def site(name: str) -> Iterator[str]:
    """Another site on this machine, `http://<name>.test:<port>`, serving one page."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{name}.test:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def listed_site() -> Iterator[str]:
    with site("chat") as origin:
        yield origin


@pytest.fixture(scope="module")
def server(database_url: str, data_dir: Path, listed_site: str) -> Iterator[Proc]:
    env = process_env(database_url, data_dir, RAG_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY, RAG_CORS_ORIGINS=listed_site)
    proc = start_server(env, data_dir / "server.log")
    yield proc
    proc.stop()


async def site_page(browser: Browser, console: Console, origin: str) -> Page:
    page = await new_page(browser, console)
    await page.goto(f"{origin}/app.html")
    return page


@pytest.fixture
async def listed_page(browser: Browser, page_console: Console, listed_site: str) -> AsyncIterator[Page]:
    page = await site_page(browser, page_console, listed_site)
    yield page
    await page.context.close()


# The page's script: fetch, and what it could read (or the browser's refusal).
FETCH = """async ([url, init]) => {
  try {
    const response = await fetch(url, init);
    return {status: response.status, body: await response.json(),
            requestId: response.headers.get("x-request-id")};
  } catch (err) {
    return {refused: String(err)};
  }
}"""


async def fetch(page: Page, url: str, init: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(FETCH, [url, init])
    return result


def key(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}", **(extra or {})}


async def test_a_listed_sites_page_reads_the_openai_api_with_a_key(listed_page: Page, server: Proc) -> None:
    # The openai JS SDK's own headers make it a preflighted request, as from a real client.
    headers = key({"Content-Type": "application/json", "X-Stainless-Lang": "js"})
    answer = await fetch(listed_page, f"{server.base_url}/v1/models", {"headers": headers})
    assert answer.get("status") == 200, answer
    assert "rag:default" in [model["id"] for model in answer["body"]["data"]]
    assert answer["requestId"], "X-Request-Id is exposed to the page"


async def test_a_listed_sites_page_reads_why_it_was_refused(listed_page: Page, server: Proc) -> None:
    answer = await fetch(listed_page, f"{server.base_url}/v1/models", {})
    assert answer.get("status") == 401, answer
    assert "API key" in answer["body"]["error"]["message"]


async def test_the_page_of_a_site_not_listed_reads_nothing(
    browser: Browser, page_console: Console, server: Proc
) -> None:
    with site("elsewhere") as other:
        page = await site_page(browser, page_console, other)
    try:
        # Chromium logs each blocked request in the console (the refusal the test wants).
        page_console.allow("CORS policy")
        page_console.allow("Failed to load resource")
        for init in ({"headers": key()}, {}):
            answer = await fetch(page, f"{server.base_url}/v1/models", init)
            assert "refused" in answer and "Failed to fetch" in answer["refused"], answer
    finally:
        await page.context.close()


async def test_a_listed_sites_page_speaks_mcp(listed_page: Page, server: Proc) -> None:
    headers = key(MCP_HEADERS)
    answer = await fetch(
        listed_page,
        f"{server.base_url}/mcp",
        {"method": "POST", "headers": headers, "body": json.dumps(INITIALIZE)},
    )
    assert answer.get("status") == 200, answer
    assert answer["body"]["result"]["serverInfo"]["name"]
