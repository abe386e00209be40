"""The chat view when no LLM is configured: every answer is extractive and says so."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, Route, expect

from tests.browser.chat_support import DOCS, ask, ingest
from tests.browser.conftest import Stack, start_stack, stop_stack
from tests.browser.seed import bearer


@pytest.fixture(scope="module")
def stack(database_url: str, data_dir: Path) -> Iterator[Stack]:
    """This module's stack has no LLM at all (`llm=None`)."""
    running = start_stack(database_url, data_dir, None)
    yield running
    stop_stack(running)


async def test_answers_without_an_llm_carry_the_extractive_badge(page: Page, stack: Stack) -> None:
    await ingest(stack, {"hnsw.txt": DOCS["hnsw.txt"], "pasta.txt": DOCS["pasta.txt"]})
    answer = await ask(page, "How do I cook pasta?")
    await expect(answer.get_by_text("Extractive answer", exact=True)).to_be_visible()
    await expect(answer.locator(".answer-body")).to_contain_text("boil salted water")
    # No LLM failed: no failure note, and the first cited passage is the pasta document.
    await expect(answer.get_by_role("note")).to_have_count(0)
    await answer.locator(".answer-body .cite").first.click()
    await expect(page.get_by_role("dialog", name="1 pasta.txt")).to_be_visible()
    await page.keyboard.press("Escape")
    await page.reload()
    await expect(page.locator(".msg-assistant").get_by_text("Extractive answer", exact=True)).to_be_visible()


async def test_a_question_answered_as_the_page_was_left_is_not_put_back_in_the_box(
    page: Page, stack: Stack
) -> None:
    """The server stores an answer that was complete before it saw the client go (an extractive one is at
    once), but the question came back in the box as unanswered, and sending it asked it twice. What a
    reload right after Enter leaves in the tab is set by hand here (a race otherwise)."""
    question = "How long does pasta boil?"
    await ask(page, question)
    await page.evaluate(
        "([q]) => { sessionStorage.setItem('rag.chatDraft', q + '\\nand my next thought');"
        " sessionStorage.setItem('rag.chatPending', q); }",
        [question],
    )
    await page.reload()
    await expect(page.locator(".msg-assistant")).to_have_count(1)
    await expect(page.locator("#chat-message")).to_have_value("and my next thought")


async def test_the_chats_loaded_stay_listed_after_an_answer(page: Page, stack: Stack) -> None:
    """After an answer the sidebar fetches its sessions again, as many as it showed, but at most 200 (the
    API's largest page): a list loaded to its 230th chat with Load more fell back to 200 rows at the next
    answer. It keeps them all."""
    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60) as api:
        for start in range(0, 230, 23):
            made = await asyncio.gather(
                *(
                    api.post("/chat/sessions", json={"title": f"Old chat {n:03d}"})
                    for n in range(start, start + 23)
                )
            )
            assert all(r.status_code == 201 for r in made)
    await page.reload()
    chats = page.get_by_role("list", name="Chats", exact=True).locator(".session-item")
    more = page.get_by_role("button", name="Load more")
    await expect(chats).to_have_count(30)  # the first page
    while await more.is_visible():
        shown = await chats.count()
        await more.click()
        await expect(chats).not_to_have_count(shown)
    listed = await chats.count()
    assert listed > 230
    await ask(page, "How do I cook pasta?")  # a new chat: one more
    await expect(page.locator('.session-link[aria-current="page"]')).to_have_count(1)
    await expect(chats).to_have_count(listed + 1)


async def test_a_chat_started_elsewhere_during_the_refresh_ends_it_listed(page: Page, stack: Stack) -> None:
    """The refresh after an answer pages by the rows it kept, not by the rows it fetched: a chat started
    elsewhere (another tab) between two of its pages shifted the list by one, the overlap was dropped as
    a duplicate and the next page asked for the same row again, forever (requests without end, the
    sidebar never redrawn). Here the other chat starts just as the refresh asks for its second page."""
    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60) as api:
        have = (await api.get("/chat/sessions", params={"limit": 1})).json()["total"]
        for n in range(have, 210):  # more than one page of 200
            made = await api.post("/chat/sessions", json={"title": f"Older chat {n:03d}"})
            assert made.status_code == 201
        await page.reload()
        chats = page.get_by_role("list", name="Chats", exact=True).locator(".session-item")
        more = page.get_by_role("button", name="Load more")
        await expect(chats).to_have_count(30)
        while await more.is_visible():
            shown = await chats.count()
            await more.click()
            await expect(chats).not_to_have_count(shown)
        listed = await chats.count()
        asked: list[str] = []

        async def elsewhere(route: Route) -> None:
            asked.append(route.request.url)
            if "offset=200" in route.request.url and len(asked) < 5:  # a chat starts in another tab first
                made = await api.post("/chat/sessions", json={"title": "From another tab"})
                assert made.status_code == 201
            await route.continue_()

        await page.route(lambda url: "/chat/sessions?" in url and "only_archived" not in url, elsewhere)
        await ask(page, "How do I cook pasta?")  # a new chat, and the refresh
        await expect(chats).to_have_count(listed + 2)
        await expect(chats.get_by_text("From another tab", exact=True)).to_have_count(1)
        assert len(asked) < 10, asked


async def test_the_search_box_finds_chats_by_title_or_message_pages_and_clears(
    page: Page, stack: Stack
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60) as api:
        made = await asyncio.gather(
            *(api.post("/chat/sessions", json={"title": f"Heron note {n:02d}"}) for n in range(32))
        )
        assert all(r.status_code == 201 for r in made)
        kitchen = (await api.post("/chat/sessions", json={"title": "Kitchen"})).json()["id"]
        asked = await api.post("/query", json={"query": "How do I cook ravioli?", "session_id": kitchen})
        assert asked.status_code == 200, asked.text
    await page.reload()
    chats = page.get_by_role("list", name="Chats", exact=True).locator(".session-title")
    box = page.get_by_role("searchbox", name="Search chats")
    await expect(chats.first).to_have_text("Kitchen")  # the most recently active
    await box.fill("heron")  # a title's word, by its beginning, any case; paged as the whole list is
    await expect(chats.first).to_have_text(re.compile("^Heron note"))
    await expect(chats).to_have_count(30)
    await page.get_by_role("button", name="Load more").click()
    await expect(chats).to_have_count(32)
    assert all(t.startswith("Heron note") for t in await chats.all_text_contents())
    await box.fill("RAVIOLI")  # a question's word
    await expect(chats).to_have_text(["Kitchen"])
    await box.fill("ravioli zzzznothing")
    await expect(page.get_by_text("No chats match.")).to_be_visible()
    await box.press("Escape")
    await expect(box).to_have_value("")
    await expect(chats).to_have_count(30)
    await expect(chats.first).to_have_text("Kitchen")
    await expect(page.get_by_text("No chats match.")).to_be_hidden()


async def test_punctuation_alone_in_the_search_box_matches_no_chat_without_asking(
    page: Page, stack: Stack
) -> None:
    """`!!!` has no word to search for: no chat matches, and the API is not asked (its 422 named `q`)."""
    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60) as api:
        made = await api.post("/chat/sessions", json={"title": "Punctuation check"})
        assert made.status_code == 201, made.text
    await page.reload()
    chats = page.get_by_role("list", name="Chats", exact=True).locator(".session-title")
    box = page.get_by_role("searchbox", name="Search chats")
    await expect(chats.first).to_be_visible()
    searched: list[str] = []
    page.on(
        "request", lambda r: searched.append(r.url) if "/chat/sessions?" in r.url and "q=" in r.url else None
    )
    for q in ["!!!", "?", "#"]:
        await box.fill(q)
        await box.press("Enter")
        await expect(page.get_by_text("No chats match.")).to_be_visible()
        await expect(chats).to_have_count(0)
    await box.fill("punctuation")  # a word again: searched as ever
    await expect(chats).to_have_text(["Punctuation check"])
    await expect(page.locator(".toast")).to_have_count(0)
    assert searched and all("punctuation" in u for u in searched), searched
