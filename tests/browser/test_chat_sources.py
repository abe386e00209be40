"""The sources under an answer say which ones it cites. The API lists every passage retrieved for the answer
(5 here), the answer cites some ([1] and [3]): the list said "5 sources" (QA, 2026-12-07), read as five
cited. Now the cited ones come first, their numbers the answer's markers, then the others, said to be
retrieved and not cited."""

from __future__ import annotations

import pytest
from playwright.async_api import Locator, Page, expect

from tests.browser.chat_support import answers, ask, ingest
from tests.browser.conftest import Stack
from tests.fakes.llm_server import FakeLLM

FISH = {
    "trout.txt": "Trout live in cold rivers and streams with clean water.",
    "carp.txt": "Carp live in warm ponds and slow rivers with muddy beds.",
    "salmon.txt": "Salmon live in the sea and swim up rivers to spawn.",
    "pike.txt": "Pike live in lakes and rivers, hiding among the weeds.",
    "eel.txt": "Eels live in rivers and cross the ocean to breed.",
}
CITING = "Trout prefer cold rivers [1], while carp prefer warm ponds [3]."


@pytest.fixture(scope="module")
async def documents(stack: Stack) -> dict[str, str]:
    return await ingest(stack, FISH)


async def _check_sources(answer: Locator) -> None:
    summary = answer.locator(".sources summary")
    await expect(summary).to_have_text("2 cited · 5 sources retrieved")
    await summary.click()
    cited = answer.get_by_role("list", name="Cited in the answer")
    others = answer.get_by_role("list", name="Also retrieved, not cited")
    await expect(cited.locator(".cite-number")).to_have_text(["1", "3"])
    await expect(others.locator(".cite-number")).to_have_text(["2", "4", "5"])
    await expect(others.get_by_role("button", name="Open source 2 (not cited):", exact=False)).to_be_visible()
    # A chip's number is the answer's marker for the same passage.
    for n in ("1", "3"):
        marker = str(await answer.locator(".answer-body .cite", has_text=n).get_attribute("aria-label"))
        place = marker.removeprefix(f"Source {n}: ")
        await expect(
            cited.get_by_role("button", name=f"Open source {n}: {place}", exact=True)
        ).to_be_visible()


async def test_an_answer_lists_the_sources_it_cites_first_and_the_others_as_not_cited(
    page: Page, documents: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.reset()
    fake_llm.behaviour.answer = CITING
    await page.get_by_label("Search mode").select_option("bm25")
    answer = await ask(page, "Where do fish live in rivers?")
    await expect(answer.locator(".answer-body .cite")).to_have_text(["1", "3"])
    await _check_sources(answer)
    # The stored answer (history, read again) says the same.
    await page.reload()
    await expect(answers(page)).to_have_count(1)
    await _check_sources(answers(page).last)


async def test_an_answer_citing_every_source_or_none_says_so(
    page: Page, documents: dict[str, str], fake_llm: FakeLLM
) -> None:
    fake_llm.reset()
    fake_llm.behaviour.answer = "Every fish here lives in rivers [1][2][3], [4, 5]."
    answer = await ask(page, "Which fish live in rivers?")
    await expect(answer.locator(".sources summary")).to_have_text("5 cited sources")
    await answer.locator(".sources summary").click()
    await expect(
        answer.get_by_role("list", name="Cited in the answer").locator(".cite-number")
    ).to_have_count(5)
    await expect(answer.locator(".source-chip.uncited")).to_have_count(0)
    # `[2]` in code is an index, not a citation (as the server's citation filter reads it).
    fake_llm.behaviour.answer = "The sources do not say; `rows[2]` is code."
    answer = await ask(page, "Do fish live in rivers?")
    await expect(answer.locator(".sources summary")).to_have_text("5 sources retrieved, none cited")
    await answer.locator(".sources summary").click()
    await expect(
        answer.get_by_role("list", name="Retrieved, not cited").locator(".cite-number")
    ).to_have_count(5)
