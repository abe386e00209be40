"""The chat reloaded while a new chat's first answer is awaited (a slow LLM: `: keep-alive` comments only):
the server stores a turn once answered, so the id its sources named does not exist after the reload."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page, expect

from tests.browser.chat_support import DOCS, answers, ingest
from tests.browser.conftest import Console, Stack
from tests.fakes.llm_server import Behaviour, FakeLLM


@pytest.fixture(scope="module")
async def documents(stack: Stack) -> dict[str, str]:
    return await ingest(stack, DOCS)


async def test_a_reload_before_a_new_chats_first_answer_is_a_new_chat_with_the_question_back(
    page: Page, page_console: Console, documents: dict[str, str], fake_llm: FakeLLM
) -> None:
    """It said "This chat does not exist. It may have been deleted, or the link is wrong": the user had
    only reloaded the page while the answer was slow to come. A new chat, the question in the box, and why."""
    page_console.allow("404")  # the reload asks for the id the unanswered turn's sources named
    fake_llm.reset()
    fake_llm.behaviour = Behaviour(hang_after_tokens=0, affects={"answer"})  # no token, keep-alives only
    await page.get_by_role("link", name="Chat", exact=True).click()
    box = page.get_by_label("Message", exact=True)
    await box.fill("What is HNSW, slowly?")
    await box.press("Enter")
    await expect(page).to_have_url(re.compile(r"#/chat/[^/?]+$"))  # the sources named the new chat's id
    await page.reload()
    await expect(page).to_have_url(re.compile(r"#/chat$"))
    await expect(page.get_by_text("This chat does not exist")).to_have_count(0)
    await expect(page.get_by_role("alert")).to_contain_text("reloaded before its answer")
    await expect(box).to_have_value("What is HNSW, slowly?")

    fake_llm.reset()
    await box.press("Enter")
    await expect(answers(page).first.get_by_role("button", name="Copy answer")).to_be_visible()
