"""A document's page while it is queued or processing asks for its progress every 4 s. Deleted meanwhile
(another tab, the API, `rag-server documents delete`), the next poll of the document was a 404, which the
browser logs as an error in its console (QA, 2026-12-07: seen once); and the page took it for a server
away, kept the stale "queued" page up and asked again every 4 s, for ever. The page now follows the
document's task (its batch answers after the delete too), says the document is gone and stops asking."""

from __future__ import annotations

from pathlib import Path

import httpx
from playwright.async_api import Page, expect

from tests.browser.conftest import Stack
from tests.browser.seed import bearer
from tests.support.processes import start_worker

# document_detail.js's STATUS_POLL_MS, and then some: the page has asked at least once after the delete.
POLL_S = 4


async def test_a_document_deleted_while_its_page_polls_says_so_without_a_console_error(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    stack.worker.stop()  # no worker: the document stays queued while its page is open
    try:
        async with httpx.AsyncClient(
            base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
        ) as client:
            content = b"Nu waits in the queue and is deleted before any worker reads it. " * 5
            response = await client.post("/upload", files=[("files", ("nu.txt", content))])
            assert response.status_code == 202, response.text
            doc_id = response.json()["tasks"][0]["document_id"]
            await page.goto(f"{stack.base_url}/#/documents/{doc_id}")
            await expect(page.locator(".document-detail .badge")).to_have_text("queued")
            await expect(page.locator("#doc-progress")).to_contain_text("queued, waiting for a worker")
            assert (await client.delete(f"/documents/{doc_id}")).status_code == 204

        gone = page.get_by_role("heading", name="Document not found")
        await expect(gone).to_be_visible(timeout=(POLL_S + 6) * 1000)
        await expect(page.get_by_role("alert")).to_have_text(
            "This document no longer exists: it was deleted, perhaps in another tab."
        )
        await expect(page.get_by_role("link", name="← All documents")).to_be_visible()
        # It asks no more: a period passes with nothing asked (the page fixture fails the test on
        # a console error, and the page would have logged a 404 at each).
        asked: list[str] = []
        page.on("request", lambda request: asked.append(request.url))
        await page.wait_for_timeout(POLL_S * 1000 + 1000)
        assert not [url for url in asked if doc_id in url or "/tasks/" in url], asked
        await expect(gone).to_be_visible()
    finally:
        stack.worker = start_worker(stack.env, tmp_path / "worker.log")
