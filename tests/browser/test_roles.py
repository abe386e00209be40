"""Roles in the web app: a reader sees documents and can download them, but no upload or delete control,
and the API refuses its upload anyway (the page only hides what the server forbids)."""

from __future__ import annotations

import httpx
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import Console, Stack, new_page, sign_in
from tests.browser.seed import bearer, create_key, upload_and_wait


async def test_a_reader_has_no_upload_or_delete_and_the_api_refuses_its_upload(
    browser: Browser, stack: Stack, page_console: Console
) -> None:
    await upload_and_wait(stack, {"handbook.txt": b"The staff handbook explains holidays and expenses."})
    key = await create_key(stack, "browser-reader", "reader")
    page = await new_page(browser, page_console)
    await sign_in(page, stack.base_url, key)
    await expect(page.locator("#whoami")).to_have_text("browser-reader · reader")
    await page.get_by_role("link", name="Documents").click()
    row = page.locator(".documents-table tbody tr", has_text="handbook.txt")
    await expect(row.get_by_role("button", name="Download handbook.txt")).to_be_visible()
    await expect(page.get_by_role("button", name="Upload", exact=True)).to_have_count(0)
    await expect(page.get_by_label("Files to upload")).to_have_count(0)
    await expect(page.get_by_role("button", name="Delete handbook.txt")).to_have_count(0)
    await expect(page.get_by_role("checkbox")).to_have_count(0)  # nothing to select for a deletion
    await page.get_by_role("link", name="handbook.txt").click()
    await expect(page.locator(".chunk-text")).to_contain_text("staff handbook")
    await expect(page.get_by_role("button", name="Download")).to_be_visible()
    await expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    await page.context.close()
    assert not page_console.unexpected()

    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(key), timeout=60) as client:
        refused = await client.post("/upload", files=[("files", ("sneaky.txt", b"not allowed"))])
        listed = await client.get("/documents")
    assert refused.status_code == 403, refused.text
    assert [d["filename"] for d in listed.json()["items"]] == ["handbook.txt"]


async def test_an_editor_sees_upload_and_delete(page: Page, stack: Stack) -> None:
    """The signed-in admin (above editor) has the controls the reader lacks: the test above can fail."""
    await upload_and_wait(stack, {"handbook.txt": b"The staff handbook explains holidays and expenses."})
    await page.get_by_role("link", name="Documents").click()
    await expect(page.get_by_role("button", name="Upload", exact=True)).to_be_visible()
    await expect(page.get_by_role("button", name="Delete handbook.txt")).to_be_visible()
    await expect(page.get_by_label("Select handbook.txt")).to_be_visible()
