"""Chat titles longer than the room they get: the sidebar and the chat's header cut them to one line, and
the whole title shows on hover (a `title` attribute)."""

from __future__ import annotations

import httpx
from playwright.async_api import Page, expect

from tests.browser.conftest import Stack
from tests.browser.seed import bearer

LONG_TITLE = (
    "How the HNSW index parameters m, ef_construction and ef_search trade recall against speed "
    "for a collection of a million chunks"
)


async def test_a_cut_title_shows_whole_on_hover(page: Page, stack: Stack) -> None:
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as client:
        response = await client.post("/chat/sessions", json={"title": LONG_TITLE})
        assert response.status_code == 201, response.text
    await page.reload()
    link = page.get_by_role("list", name="Chats", exact=True).get_by_role("link").first
    title = link.locator(".session-title")
    await expect(title).to_have_text(LONG_TITLE)
    # The sidebar does cut it: without the attribute the end of the title could not be read anywhere.
    assert await title.evaluate("el => el.scrollWidth > el.clientWidth")
    await expect(link).to_have_attribute("title", LONG_TITLE)

    await link.click()
    heading = page.get_by_role("heading", name=LONG_TITLE)
    await expect(heading).to_be_visible()
    assert await heading.evaluate("el => el.scrollWidth > el.clientWidth")
    await expect(heading).to_have_attribute("title", LONG_TITLE)
    # A new chat's header names itself again, on hover too: no title of the chat left before.
    await page.get_by_role("button", name="New chat").click()
    fresh = page.get_by_role("heading", name="New chat", exact=True)
    await expect(fresh).to_have_attribute("title", "New chat")
