"""A document deleted by someone else while this tab searches within it or chats about it ("Search in it",
"Ask about it"). Seen by QA on 2026-12-07: the search said "No results. Try other words", and the chat's
next answer "No relevant passages were found", under a header still saying "About <name>": as if the
words were wrong, not the document gone."""

from __future__ import annotations

import httpx
from playwright.async_api import Page, expect

from tests.browser.chat_support import ask
from tests.browser.conftest import Console, Stack
from tests.browser.seed import bearer, upload_and_wait

FILES = {
    "geysers.txt": b"Geysers erupt when underground water boils and steam pushes it up.",
    "glaciers.txt": b"Glaciers carve valleys as the ice slowly flows downhill.",
}


async def _delete(stack: Stack, document_id: str) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key)) as api:
        assert (await api.delete(f"/documents/{document_id}")).status_code == 204


async def test_a_search_within_a_document_deleted_meanwhile_says_it_is_gone(
    page: Page, stack: Stack, page_console: Console
) -> None:
    page_console.allow("404")  # the look-up of the deleted document
    tasks = await upload_and_wait(stack, FILES)
    document_id = tasks["geysers.txt"]["document_id"]
    await page.goto(f"{stack.base_url}/#/search?q=geysers&doc={document_id}")
    await expect(page.locator(".hit")).to_have_count(1)
    await _delete(stack, document_id)
    await page.get_by_role("button", name="Search", exact=True).click()
    await expect(page.locator(".search-status")).to_contain_text(
        "The document this search is limited to no longer exists"
    )
    await expect(page.locator("#main")).not_to_contain_text("Try other words")


async def test_a_chat_about_a_document_deleted_meanwhile_says_it_is_gone(
    page: Page, stack: Stack, page_console: Console
) -> None:
    page_console.allow("404")  # the look-up of the deleted document
    tasks = await upload_and_wait(stack, FILES)
    document_id = tasks["glaciers.txt"]["document_id"]
    await page.goto(f"{stack.base_url}/#/chat?doc={document_id}")
    first = await ask(page, "How do glaciers carve valleys?")
    await expect(first).to_contain_text("1 cited source")
    await _delete(stack, document_id)
    await ask(page, "And how fast do they flow?")
    await expect(page.get_by_text("“glaciers.txt” no longer exists").first).to_be_visible()
