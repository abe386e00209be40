"""A query typed (or pasted from a PDF) with a ligature, "ﬁnancial" (U+FB01), is stored and searched
spelled out, so BM25 finds the text "financial"; the web app should then mark "financial" in the hit and
in the document's "Find in chunks", as it does for the query typed without the ligature (QA, 2026-12-06:
the hit is found but nothing is marked, and the document page says "1 chunk holds “ﬁnancial”" with no
mark)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import Stack
from tests.browser.seed import upload_and_wait

FILES = {
    "report.txt": "Quarterly report. The \ufb01nancial \ufb02ows of the company improved.".encode(),
}


@pytest.fixture(scope="module")
async def documents(stack: Stack) -> dict[str, dict[str, Any]]:
    tasks = await upload_and_wait(stack, FILES)
    assert {t["status"] for t in tasks.values()} == {"completed"}, tasks
    return tasks


@pytest.mark.parametrize("query", ["financial flows", "\ufb01nancial \ufb02ows"])
async def test_a_ligature_in_the_query_marks_the_word_in_a_search_hit(
    page: Page, documents: dict[str, dict[str, Any]], query: str
) -> None:
    await page.get_by_role("link", name="Search", exact=True).click()
    await page.get_by_label("Query").fill(query)
    await page.get_by_role("radio", name="BM25", exact=True).check()
    await page.get_by_role("button", name="Search", exact=True).click()
    hits = page.locator(".hit")
    await expect(hits).to_have_count(1)
    await expect(hits.first.locator(".hit-text")).to_contain_text("financial flows")
    await expect(hits.first.locator(".hit-text mark")).to_have_text(["financial", "flows"])


@pytest.mark.parametrize("find", ["financial", "\ufb01nancial"])
async def test_a_ligature_in_find_in_chunks_marks_the_word(
    page: Page, stack: Stack, documents: dict[str, dict[str, Any]], find: str
) -> None:
    doc = documents["report.txt"]["document_id"]
    await page.goto(f"{stack.base_url}/#/documents/{doc}?find={find}")
    await expect(page.locator("#find-count")).to_contain_text("1 chunk holds")
    await expect(page.locator("main mark")).to_have_text(["financial"])
