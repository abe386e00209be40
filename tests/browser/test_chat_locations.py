"""Places in structured files in a real browser: a speaker-notes passage is cited by slide, with the
slide's title as its section, in the answer's citation, the passage dialog and the source list; a search
hit names its slide and section; a document's page shows each chunk's headings."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from playwright.async_api import Locator, Page, expect

from tests.browser.chat_support import ask
from tests.browser.conftest import Stack
from tests.fakes.llm_server import FakeLLM
from tests.support.sample_files import pdf_with_text, pptx_bytes

DECK = pptx_bytes(
    [
        {"title": "Roadmap", "body": "Ship the search page."},
        {"title": "Risks", "body": "Hiring is slow.", "notes": "Remember the narwhal contract renewal."},
    ]
)
REPORT = pdf_with_text(
    ["An opening page about nothing much.", "The quokka census counted four hundred animals."]
)
GUIDE = b"# Field Guide\n\n## Install\n\n### Linux\n\nRun the package manager to fetch the wombat tools.\n"


@pytest.fixture(scope="module")
async def documents(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as client:
        files = [
            ("files", ("deck.pptx", DECK, "application/octet-stream")),
            ("files", ("guide.md", GUIDE, "text/markdown")),
            ("files", ("report.pdf", REPORT, "application/pdf")),
        ]
        response = await client.post("/upload", files=files)
        assert response.status_code == 202, response.text
        batch = response.json()["batch_id"]
        for _ in range(600):
            status = (await client.get(f"/tasks/{batch}/status")).json()
            if status["done"]:
                break
            await asyncio.sleep(0.2)
        assert status["status"] == "completed", status


async def open_first_citation(page: Page, question: str, source: str) -> Locator:
    """Ask (BM25 only) and open the passage dialog of the answer's citation [1], named `source`."""
    await page.get_by_label("Search mode").select_option("bm25")
    answer = await ask(page, question)
    name = re.compile(f"^Source 1: {re.escape(source)}$")
    await answer.locator(".answer-body").get_by_role("button", name=name).click()
    return page.get_by_role("dialog", name=re.compile(re.escape(source.split(",")[0])))


async def test_a_slide_citation_names_the_slide_and_its_title(
    page: Page, documents: None, fake_llm: FakeLLM
) -> None:
    fake_llm.reset()
    await page.get_by_label("Search mode").select_option("bm25")
    answer = await ask(page, "narwhal contract renewal")
    citation = answer.locator(".answer-body").get_by_role(
        "button", name=re.compile(r"^Source 1: deck\.pptx, slide 2, speaker notes$")
    )
    await citation.click()
    dialog = page.get_by_role("dialog", name=re.compile("deck.pptx"))
    await expect(dialog.locator("dt", has_text="Location")).to_be_visible()
    await expect(dialog.locator("dd", has_text="slide 2, speaker notes")).to_be_visible()
    await expect(dialog.locator("dt", has_text="Section")).to_be_visible()
    await expect(dialog.locator("dd.passage-section")).to_have_text("Risks")
    await expect(dialog.get_by_label("Excerpt")).to_have_text("Remember the narwhal contract renewal.")
    await page.keyboard.press("Escape")

    await answer.locator("summary", has_text="source").click()
    chip = answer.get_by_role(
        "button", name=re.compile(r"^Open source 1: deck\.pptx, slide 2, speaker notes")
    )
    await expect(chip.locator(".source-section")).to_have_text("Risks")


async def test_a_pdf_citation_names_its_page(page: Page, documents: None, fake_llm: FakeLLM) -> None:
    fake_llm.reset()
    dialog = await open_first_citation(page, "quokka census", "report.pdf, page 2")
    await expect(dialog.locator("dt", has_text="Page")).to_be_visible()
    await expect(
        dialog.locator("dt", has_text="Page").locator("xpath=following-sibling::dd[1]")
    ).to_have_text("2")
    await expect(dialog.locator("dt", has_text="Location")).to_have_count(0)
    await page.keyboard.press("Escape")


async def test_a_markdown_citation_shows_its_heading_path(
    page: Page, documents: None, fake_llm: FakeLLM
) -> None:
    fake_llm.reset()
    # Search, then Chat: Back from the chat is a page of this app, not the document before it.
    await page.get_by_role("link", name="Search", exact=True).click()
    await page.get_by_role("link", name="Chat", exact=True).click()
    dialog = await open_first_citation(page, "wombat tools", "guide.md")
    await expect(dialog.locator("dd.passage-section")).to_have_text("Field Guide > Install > Linux")
    # Markdown has no pages: no "Page —" row.
    await expect(dialog.locator("dt", has_text="Page")).to_have_count(0)
    await expect(dialog.locator(".passage-facts")).not_to_contain_text("—")
    # Back closes it rather than leaving it open over the page Back leads to.
    await page.go_back()
    await expect(page.get_by_role("heading", name="Search")).to_be_visible()
    await expect(dialog).to_have_count(0)


async def test_a_search_hit_names_the_slide_and_its_title(page: Page, documents: None) -> None:
    await page.get_by_role("link", name="Search", exact=True).click()
    await page.get_by_label("Query").fill("narwhal contract renewal")
    await page.get_by_role("radio", name="BM25", exact=True).check()
    await page.get_by_role("button", name="Search", exact=True).click()
    hit = page.locator(".hit").first
    await expect(hit.locator(".hit-title a")).to_have_text("deck.pptx")
    await expect(hit.locator(".hit-title")).to_contain_text("slide 2, speaker notes · chunk ")
    await expect(hit.locator(".hit-title")).not_to_contain_text("page")
    await expect(hit.locator(".hit-section")).to_have_text("Risks")


async def test_a_document_page_shows_each_chunks_headings(page: Page, documents: None) -> None:
    await page.get_by_role("link", name="Search", exact=True).click()
    await page.get_by_label("Query").fill("wombat tools")
    await page.get_by_role("radio", name="BM25", exact=True).check()
    await page.get_by_role("button", name="Search", exact=True).click()
    await page.locator(".hit-title a", has_text="guide.md").first.click()
    await expect(page.get_by_role("heading", name="guide.md")).to_be_visible()
    # The metadata editor opens on request only (a form's display once overrode `hidden`).
    editor = page.get_by_label("Metadata (a JSON object", exact=False)
    await expect(editor).to_be_hidden()
    await expect(page.get_by_label("Current metadata", exact=True)).to_be_visible()
    chunk = page.locator(".chunk").filter(has_text="wombat tools")
    await expect(chunk.locator(".chunk-section")).to_have_text("Field Guide > Install > Linux")
    # A Markdown file has no pages, slides or rows: nothing claims one.
    await expect(chunk.locator(".chunk-place")).to_have_count(0)

    await page.get_by_role("link", name="Documents", exact=True).click()
    await page.get_by_role("link", name="deck.pptx").click()
    notes = page.locator(".chunk").filter(has_text="narwhal")
    await expect(notes.locator(".chunk-place")).to_have_text("slide 2, speaker notes")
    await expect(notes.locator(".chunk-section")).to_have_text("Risks")
