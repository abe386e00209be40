"""Text in a right-to-left script (Hebrew, Arabic) reads right to left in the web app: a passage, a
document's chunk, a question each take their direction from their own first letter
(CSS `unicode-bidi: plaintext`), so a sentence's final "." or "?" ends it on the left, not on the right
where a reader of Hebrew starts; English text around them stays left to right."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import Locator, Page, expect

from tests.browser.conftest import Stack
from tests.browser.seed import upload_and_wait

HEBREW = "כל עובד זכאי לעשרים ימי חופשה בשנה."
QUESTION = "כמה ימי חופשה מגיעים לעובד?"
FILES = {
    "חופשות.txt": HEBREW.encode(),
    "english.txt": b"Every employee is entitled to twenty days of leave a year.",
}

# Where the text's first and last visible characters are drawn: their x centres, and the element's.
PLACES = """(el) => {
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    const chars = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (let i = 0; i < node.data.length; i++) if (node.data[i].trim()) chars.push([node, i]);
    }
    const centre = ([node, i]) => {
        const range = document.createRange();
        range.setStart(node, i);
        range.setEnd(node, i + 1);
        const box = range.getBoundingClientRect();
        return box.left + box.width / 2;
    };
    const box = el.getBoundingClientRect();
    return {first: centre(chars[0]), last: centre(chars[chars.length - 1]), middle: box.left + box.width / 2};
}"""


async def reads(locator: Locator) -> str:
    """ "rtl" when the text starts on the right (aligned there) and runs leftwards, "ltr" when it starts on
    the left and runs rightwards. A Hebrew sentence in a left-to-right paragraph is neither: its letters
    run leftwards from the right of its words, its final "." stands at their right (where a reader of
    Hebrew starts), and it is aligned left."""
    for _ in range(50):  # a view redrawn as results arrive: measure the element drawn last
        places: dict[str, float] = await locator.evaluate(PLACES)
        if places["middle"] < places["first"] and places["last"] < places["first"]:
            return "rtl"
        if places["first"] < places["middle"] and places["first"] < places["last"]:
            return "ltr"
        await asyncio.sleep(0.1)
    return f"neither: {places}"


async def right_to_left(field: Locator) -> bool:
    """A text box (its value is no text node to measure): its direction, from its value (dir="auto")."""
    return bool(await field.evaluate("(el) => el.matches(':dir(rtl)')"))


@pytest.fixture(scope="module")
async def documents(stack: Stack) -> dict[str, dict[str, Any]]:
    tasks = await upload_and_wait(stack, FILES)
    assert {t["status"] for t in tasks.values()} == {"completed"}, tasks
    return tasks


async def test_a_hebrew_passage_and_question_read_right_to_left(
    page: Page, stack: Stack, documents: dict[str, dict[str, Any]]
) -> None:
    await page.get_by_role("link", name="Search", exact=True).click()
    await page.get_by_label("Query").fill("ימי חופשה")
    await page.get_by_role("radio", name="BM25", exact=True).check()
    await page.get_by_role("button", name="Search", exact=True).click()
    hit = page.locator(".hit").first
    await expect(hit.locator(".hit-title a")).to_have_text("חופשות.txt")
    assert await reads(hit.locator(".hit-text")) == "rtl"
    assert await right_to_left(page.get_by_label("Query"))

    await page.get_by_role("radio", name="Vector", exact=True).check()
    await page.get_by_label("Query").fill("days of leave")
    await page.get_by_role("button", name="Search", exact=True).click()
    await expect(page.locator(".hit")).to_have_count(2)
    english = page.locator(".hit", has_text="english.txt").locator(".hit-text")
    assert await reads(english) == "ltr"

    await page.get_by_role("link", name="Chat", exact=True).click()
    box = page.get_by_placeholder("Ask about your documents…")
    await box.fill(QUESTION)
    assert await right_to_left(box)
    await box.press("Enter")
    bubble = page.locator(".msg-user .bubble").last
    await expect(bubble).to_have_text(QUESTION)
    assert await reads(bubble) == "rtl"
