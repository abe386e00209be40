"""The Documents view: the table sorts, filters and pages (all kept in the URL), downloads, deletes after a
confirmation; a document's page shows its details, its failure reason and its chunks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page, Route, expect
from playwright.async_api import Error as PlaywrightError

from tests.browser.conftest import Console, Stack, new_page, sign_in
from tests.browser.seed import bearer, upload_and_wait
from tests.support.processes import start_worker
from tests.support.sample_files import pptx_bytes

GARBAGE_PDF = b"%PDF-1.7\nthis is not really a PDF \x00\xff\xfe"


def sized_text(i: int) -> bytes:
    """Document i: distinct sizes (i grows -> bigger), a few sentences about its own number."""
    return (f"Document number {i} talks about otters and rivers. " * (i + 1)).encode()


@pytest.fixture(scope="module")
async def documents(stack: Stack) -> dict[str, dict[str, Any]]:
    files = {f"doc-{i:02d}.txt": sized_text(i) for i in range(1, 12)}
    files["broken.pdf"] = GARBAGE_PDF
    teams = {
        "doc-03.txt": {"team": "a"},
        "doc-04.txt": {"team": "a", "year": 2021},
        "doc-05.txt": {"team": "b"},
    }
    tasks = await upload_and_wait(stack, files, file_metadata=teams)
    assert tasks["broken.pdf"]["status"] == "failed"
    return {name: {**task, "content": files[name]} for name, task in tasks.items()}


def names(page: Page) -> Any:
    return page.locator(".documents-table tbody td.name-cell a")


async def test_table_sorts_filters_and_pages_with_the_state_in_the_url(
    page: Page, stack: Stack, documents: dict[str, dict[str, Any]]
) -> None:
    await page.get_by_role("link", name="Documents", exact=True).click()
    await expect(page.get_by_role("heading", name="Documents")).to_be_visible()
    await expect(names(page)).to_have_count(12)
    # Newest first by default: the whole batch was uploaded at once, so check the column says so.
    uploaded = page.get_by_role("columnheader", name="Uploaded")
    await expect(uploaded).to_have_attribute("aria-sort", "descending")

    name_header = page.get_by_role("columnheader", name="Name")
    await name_header.get_by_role("button").click()
    await expect(name_header).to_have_attribute("aria-sort", "ascending")
    await expect(uploaded).to_have_attribute("aria-sort", "none")
    await expect(names(page).first).to_have_text("broken.pdf")
    await expect(names(page).last).to_have_text("doc-11.txt")
    await name_header.get_by_role("button").click()
    await expect(name_header).to_have_attribute("aria-sort", "descending")
    await expect(names(page).first).to_have_text("doc-11.txt")
    assert "sort=name" in page.url

    # Size: biggest first on the first click.
    await page.get_by_role("columnheader", name="Size").get_by_role("button").click()
    await expect(names(page).first).to_have_text("doc-11.txt")
    await expect(names(page).last).to_have_text("broken.pdf")

    # Paging: 10 per page, the range says where we are.
    await page.get_by_label("Per page").select_option("10")
    await expect(page.get_by_text("1–10 of 12")).to_be_visible()
    await expect(names(page)).to_have_count(10)
    await expect(page.get_by_role("button", name="Previous page")).to_be_disabled()
    await page.get_by_role("button", name="Next page").click()
    await expect(page.get_by_text("11–12 of 12")).to_be_visible()
    await expect(names(page)).to_have_text(["doc-01.txt", "broken.pdf"])
    await expect(page.get_by_role("button", name="Next page")).to_be_disabled()
    assert "page=2" in page.url and "per=10" in page.url

    # Filter by status: the failed document, with its reason in the row.
    await page.get_by_label("Status").select_option("failed")
    await expect(names(page)).to_have_text(["broken.pdf"])
    await expect(page.locator(".row-error")).to_contain_text("The PDF is damaged or not a PDF")
    await expect(page.get_by_text("1–1 of 1")).to_be_visible()
    assert "status=failed" in page.url and "page=" not in page.url

    # Reload keeps filters, sort and paging: they live in the URL.
    await page.reload()
    await expect(page.get_by_label("Status")).to_have_value("failed")
    await expect(names(page)).to_have_text(["broken.pdf"])
    await page.get_by_label("Status").select_option("ready")
    await page.get_by_label("Type").select_option("pdf")
    await expect(page.get_by_text("No document matches these filters.")).to_be_visible()
    await page.get_by_role("link", name="Clear filters").first.click()
    await expect(page.get_by_text("1–10 of 12")).to_be_visible()
    await page.screenshot(path="/tmp/shots/documents.png", full_page=True)


async def test_the_name_filter_narrows_the_list_while_typing_and_lives_in_the_url(
    page: Page, documents: dict[str, dict[str, Any]]
) -> None:
    await page.goto(page.url.split("#")[0] + "#/documents?sort=name&order=asc")
    await expect(names(page)).to_have_count(12)
    field = page.get_by_label("Name", exact=True)
    # Typed slowly (pauses longer than the wait before asking): each answer leaves the typing alone.
    await field.press_sequentially("DOC-1", delay=450)
    await expect(names(page)).to_have_text(["doc-10.txt", "doc-11.txt"])
    await expect(field).to_have_value("DOC-1")
    assert "name=DOC-1" in page.url and "sort=name" in page.url
    await page.reload()
    await expect(page.get_by_label("Name", exact=True)).to_have_value("DOC-1")
    await expect(names(page)).to_have_text(["doc-10.txt", "doc-11.txt"])
    # With another filter; then a name nothing has.
    await page.get_by_label("Type").select_option("pdf")
    await expect(page.get_by_text("No document matches these filters.")).to_be_visible()
    await page.get_by_label("Type").select_option("")
    await field.fill("100%")
    await expect(page.get_by_text("No document matches these filters.")).to_be_visible()
    await page.get_by_role("link", name="Clear filters").first.click()
    await expect(field).to_have_value("")
    await expect(names(page)).to_have_count(12)
    assert "name=" not in page.url


async def test_the_contains_filter_finds_documents_by_the_words_of_their_text(
    page: Page, documents: dict[str, dict[str, Any]]
) -> None:
    await page.goto(page.url.split("#")[0] + "#/documents?sort=name&order=asc")
    await expect(names(page)).to_have_count(12)
    field = page.get_by_label("Contains", exact=True)
    await field.fill("number 7 talks")
    await expect(names(page)).to_have_text(["doc-07.txt"])
    assert "has=number" in page.url
    await page.reload()
    await expect(page.get_by_label("Contains", exact=True)).to_have_value("number 7 talks")
    await expect(names(page)).to_have_text(["doc-07.txt"])
    # Exact words, case as written (as Chroma's $contains).
    await page.get_by_label("Contains", exact=True).fill("Number 7 talks")
    await expect(page.get_by_text("No document matches these filters.")).to_be_visible()
    await page.get_by_role("link", name="Clear filters").first.click()
    await expect(page.get_by_label("Contains", exact=True)).to_have_value("")
    await expect(names(page)).to_have_count(12)
    assert "has=" not in page.url


async def test_the_metadata_filter_narrows_the_list_once_its_json_is_valid(
    page: Page, documents: dict[str, dict[str, Any]], page_console: Console
) -> None:
    page_console.allow("422")  # the filter only the server refuses, at the end
    await page.goto(page.url.split("#")[0] + "#/documents?sort=name&order=asc")
    await expect(names(page)).to_have_count(12)
    field = page.get_by_label("Metadata", exact=True)
    await field.fill('{"team": "a"}')
    await expect(names(page)).to_have_text(["doc-03.txt", "doc-04.txt"])
    assert "meta=" in page.url and "sort=name" in page.url
    # Half-typed: explained under the filters, the list left as it was.
    await field.fill('{"team": "a", "year"')
    await expect(page.locator("#filter-metadata-note")).to_contain_text("Not valid JSON")
    await page.screenshot(path="/tmp/shots/documents-metadata-half-typed.png")
    await expect(names(page)).to_have_text(["doc-03.txt", "doc-04.txt"])
    await field.fill('{"team": "a", "year": 2021}')
    await expect(names(page)).to_have_text(["doc-04.txt"])
    await expect(page.locator("#filter-metadata-note")).to_be_hidden()
    # Valid JSON the server refuses: its sentence, and the rows of the filter before it gone (they read
    # as this filter's matches).
    await field.fill('{"team": {"$bogus": 1}}')
    await expect(page.get_by_role("alert").filter(has_text="bogus")).to_be_visible()
    await expect(names(page)).to_have_count(0)
    await expect(page.locator(".pager")).to_be_hidden()
    await field.fill('{"team": "a", "year": 2021}')
    await expect(names(page)).to_have_text(["doc-04.txt"])
    # With the name filter, after a reload; then Clear filters empties both.
    await page.reload()
    await expect(page.get_by_label("Metadata", exact=True)).to_have_value('{"team":"a","year":2021}')
    await page.get_by_label("Name", exact=True).fill("doc-03")
    await expect(page.get_by_text("No document matches these filters.")).to_be_visible()
    await page.get_by_role("link", name="Clear filters").first.click()
    await expect(page.get_by_label("Metadata", exact=True)).to_have_value("")
    await expect(names(page)).to_have_count(12)
    assert "meta=" not in page.url
    # A filter the server refuses (a URL written by hand): its sentence, not an empty table.
    await page.goto(page.url.split("#")[0] + '#/documents?meta={"team":{"x":1}}')
    await expect(page.get_by_role("alert").filter(has_text="metadata")).to_be_visible()


async def test_download_gives_the_original_bytes(
    page: Page, documents: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    await page.goto(page.url.split("#")[0] + "#/documents?sort=name&order=asc")
    async with page.expect_download() as info:
        await page.get_by_role("button", name="Download doc-03.txt").click()
    downloaded = await info.value
    assert downloaded.suggested_filename == "doc-03.txt"
    target = tmp_path / "doc-03.txt"
    await downloaded.save_as(target)
    assert target.read_bytes() == documents["doc-03.txt"]["content"]


async def test_delete_asks_first_and_cancel_keeps_the_document(
    page: Page, documents: dict[str, dict[str, Any]]
) -> None:
    await page.goto(page.url.split("#")[0] + "#/documents?sort=name&order=asc")
    await expect(page.get_by_text("1–12 of 12")).to_be_visible()
    await page.get_by_role("button", name="Delete doc-05.txt").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("Delete “doc-05.txt”?")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_have_count(0)
    await expect(page.get_by_text("1–12 of 12")).to_be_visible()

    await page.get_by_role("button", name="Delete doc-05.txt").click()
    await page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    await expect(page.get_by_text("1–11 of 11")).to_be_visible()
    await expect(page.get_by_role("link", name="doc-05.txt")).to_have_count(0)
    # Gone on the server too.
    await page.reload()
    await expect(page.get_by_text("1–11 of 11")).to_be_visible()


async def test_a_document_page_shows_details_and_chunks(
    page: Page, documents: dict[str, dict[str, Any]]
) -> None:
    await page.goto(page.url.split("#")[0] + "#/documents?sort=name&order=asc")
    await page.get_by_role("link", name="doc-11.txt").click()
    doc_id = documents["doc-11.txt"]["document_id"]
    assert page.url.endswith(f"#/documents/{doc_id}")
    await expect(page.get_by_role("heading", name="doc-11.txt")).to_be_visible()
    facts = page.locator(".facts")
    await expect(facts).to_contain_text("default")
    await expect(facts).to_contain_text("text/plain")
    chunks = page.locator(".chunk")
    await expect(chunks.first.locator(".chunk-head span").first).to_have_text("Chunk 1")
    await expect(chunks.first.locator(".chunk-text")).to_contain_text("Document number 11 talks about otters")
    await page.screenshot(path="/tmp/shots/document.png", full_page=True)
    await expect(page.locator("main")).not_to_contain_text("null")  # no missing part printed as text

    # Back to the list it came from, then the failed document: its reason, no chunks.
    await page.get_by_role("link", name="← All documents").click()
    await expect(page.get_by_role("columnheader", name="Name")).to_have_attribute("aria-sort", "ascending")
    await page.get_by_role("link", name="broken.pdf").click()
    await expect(page.get_by_role("note")).to_contain_text("Processing failed: The PDF is damaged")
    await expect(page.get_by_text("No chunks: processing failed.")).to_be_visible()


async def test_an_unknown_document_says_so(page: Page, stack: Stack, page_console: Console) -> None:
    page_console.allow("404")
    await page.goto(stack.base_url + "/#/documents/00000000-0000-0000-0000-000000000000")
    await expect(page.get_by_role("heading", name="Document not found")).to_be_visible()


async def test_on_a_phone_in_dark_mode_the_table_scrolls_not_the_page(
    browser: Browser, stack: Stack, page_console: Console, documents: dict[str, dict[str, Any]]
) -> None:
    phone = await new_page(browser, page_console, viewport={"width": 375, "height": 740}, color_scheme="dark")
    await sign_in(phone, stack.base_url, stack.admin_key)
    await phone.get_by_role("link", name="Documents").click()
    await expect(names(phone).first).to_be_visible()
    await phone.get_by_role("button", name="Upload", exact=True).click()
    await phone.screenshot(path="/tmp/shots/documents-phone-dark.png", full_page=True)
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 375
    wrap = phone.locator(".table-wrap")
    assert await wrap.evaluate("el => el.scrollWidth > el.clientWidth")
    background = await phone.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(21, 23, 27)"  # app.css's dark --bg
    await phone.get_by_role("link", name="doc-11.txt").click()
    await expect(phone.locator(".chunk").first).to_be_visible()
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 375
    await phone.screenshot(path="/tmp/shots/document-phone-dark.png", full_page=True)
    await phone.context.close()
    assert not page_console.unexpected()


async def test_a_page_past_the_end_shows_the_last_page(
    page: Page, stack: Stack, documents: dict[str, dict[str, Any]]
) -> None:
    """An old link, or the last documents deleted meanwhile: "981–980 of 12" over an empty table was shown."""
    await page.goto(stack.base_url + "/#/documents?sort=name&order=asc&per=10&page=99")
    await expect(page.locator(".pager span")).to_have_text(re.compile(r"^11–(\d+) of \1$"))
    await expect(names(page).first).to_be_visible()
    assert page.url.endswith("#/documents?sort=name&order=asc&per=10&page=2")
    await expect(page.get_by_label("Page number")).to_have_value("2")
    await expect(page.locator(".pager-page")).to_have_text("Page of 2")
    await expect(page.get_by_role("button", name="Last page")).to_be_disabled()
    # Further than the API pages (an offset over 2**31 - 1): its 422 was shown instead of the last page.
    await page.goto(stack.base_url + "/#/documents?sort=name&order=asc&per=10&page=99999999999")
    await expect(page).to_have_url(re.compile(r"&per=10&page=2$"))
    await expect(page.get_by_label("Page number")).to_have_value("2")
    await expect(page.locator(".documents .form-error")).to_have_text("")
    # Page 0, a negative page or no number at all: the first page.
    for asked in ("0", "-3", "last"):
        # From page 2 each time: the first page must be this URL's doing, not what was on screen.
        await page.goto(stack.base_url + "/#/documents?sort=name&order=asc&per=10&page=2")
        await expect(page.locator(".pager span")).to_have_text(re.compile(r"^11–(\d+) of \1$"))
        await page.goto(f"{stack.base_url}/#/documents?sort=name&order=asc&per=10&page={asked}")
        await expect(page.locator(".pager span")).to_have_text(re.compile(r"^1–10 of \d+$"))
        await expect(page.get_by_label("Page number")).to_have_value("1")
        await expect(page.get_by_role("button", name="First page")).to_be_disabled()


PAGED = "paged"


@pytest.fixture(scope="module")
async def paged_collection(stack: Stack) -> str:
    """A collection of 31 documents: 4 pages of 10 (paged-01.txt ... paged-31.txt by name)."""
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as admin:
        assert (await admin.post("/collections", json={"name": PAGED})).status_code == 201
    files = {f"paged-{i:02d}.txt": f"Paged document {i} is about herons.".encode() for i in range(1, 32)}
    await upload_and_wait(stack, files, collection=PAGED)
    return PAGED


async def open_paged(page: Page, stack: Stack, collection: str, query: str) -> None:
    await page.goto(f"{stack.base_url}/#/documents?{query}")
    await page.reload()  # the switcher lists the collections there were at sign-in
    await page.get_by_label("Collection").select_option(collection)


async def test_the_documents_pager_goes_to_the_last_page_the_first_and_a_page_typed(
    page: Page, stack: Stack, paged_collection: str
) -> None:
    """Only Previous and Next: the last of hundreds of pages was hundreds of clicks away."""
    await open_paged(page, stack, paged_collection, "sort=name&order=asc&per=10")
    count = page.locator(".pager span")
    number = page.get_by_label("Page number")
    await expect(count).to_have_text("1–10 of 31")
    await expect(number).to_have_value("1")
    await expect(page.locator(".pager-page")).to_have_text("Page of 4")
    await expect(page.get_by_role("button", name="First page")).to_be_disabled()
    await expect(page.get_by_role("button", name="Previous page")).to_be_disabled()

    last = page.get_by_role("button", name="Last page")
    await last.click()
    await expect(count).to_have_text("31–31 of 31")
    await expect(names(page)).to_have_text(["paged-31.txt"])
    await expect(number).to_have_value("4")
    await expect(last).to_be_disabled()
    await expect(page.get_by_role("button", name="Next page")).to_be_disabled()
    await expect(number).to_be_focused()  # not lost with the button it was on, now disabled
    assert page.url.endswith("per=10&page=4")
    await page.get_by_role("button", name="First page").click()
    await expect(count).to_have_text("1–10 of 31")
    await expect(names(page).first).to_have_text("paged-01.txt")
    assert "page=" not in page.url

    # A page typed, Enter: there; the URL holds it, reload and back keep it.
    await number.fill("3")
    await number.press("Enter")
    await expect(count).to_have_text("21–30 of 31")
    await expect(names(page).first).to_have_text("paged-21.txt")
    assert page.url.endswith("per=10&page=3")
    await page.reload()
    await expect(count).to_have_text("21–30 of 31")
    await expect(page.get_by_label("Page number")).to_have_value("3")
    # Past the last page: the last; below the first: the first.
    await number.fill("40")
    await number.press("Enter")
    await expect(count).to_have_text("31–31 of 31")
    await expect(number).to_have_value("4")
    await number.fill("0")
    await number.press("Enter")
    await expect(count).to_have_text("1–10 of 31")
    await page.go_back()
    await expect(count).to_have_text("31–31 of 31")
    await page.go_back()
    await expect(count).to_have_text("21–30 of 31")
    await expect(number).to_have_value("3")


async def test_on_a_phone_the_pagers_fit_the_width(
    browser: Browser, stack: Stack, page_console: Console, paged_collection: str, long_document: str
) -> None:
    """First, Previous, the page's number, Next and Last side by side are wider than a phone."""
    phone = await new_page(browser, page_console, viewport={"width": 375, "height": 740})
    await sign_in(phone, stack.base_url, stack.admin_key)

    async def fits(what: str) -> None:
        pager = phone.locator(".pager")
        await pager.scroll_into_view_if_needed()
        await expect(pager.get_by_role("button")).to_have_count(4)
        for button in await pager.get_by_role("button").all():
            box = await button.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, what
        page_width = "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        scroll, client = await phone.evaluate(page_width)
        assert scroll <= client, what
        await phone.screenshot(path=f"/tmp/shots/{what}.png")

    await open_paged(phone, stack, paged_collection, "sort=name&order=asc&per=10&page=2")
    await expect(phone.locator(".pager span")).to_have_text("11–20 of 31")
    await fits("pager-phone-light")
    await phone.emulate_media(color_scheme="dark")
    await phone.goto(f"{stack.base_url}/#/documents/{long_document}?page=2")
    await expect(phone.locator(".pager span")).to_contain_text("Chunks 51–100 of ")
    await fits("chunk-pager-phone-dark")
    await phone.context.close()
    assert not page_console.unexpected()


async def test_a_list_the_server_refuses_is_not_asked_for_again_and_again(
    page: Page, stack: Stack, page_console: Console
) -> None:
    """A refusal (a type filter over its length in the URL: 422) was retried every 4 s, for ever, as if
    the server were away; only an unreachable or failing server is."""
    page_console.allow("422")
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "/documents?" in request.url else None)
    await page.clock.install()
    await page.goto(stack.base_url + "/#/documents?type=" + "x" * 30)
    await expect(page.get_by_text("String should have at most 20 characters")).to_be_visible()
    await page.clock.run_for(30_000)  # the page's timers, not the test's: 30 s pass at once
    assert len(asked) == 1, asked


LONG_TEXT = "\n\n".join(
    f"Section {i} is about the river otter's day number {i}. " + "Otters swim, dive and eat fish. " * 20
    for i in range(150)
).encode()


@pytest.fixture(scope="module")
async def long_document(stack: Stack) -> str:
    """A document of a few pages of chunks (4 at 50 a page, the server's chunks of 128 tokens): its id."""
    tasks = await upload_and_wait(stack, {"long-otters.txt": LONG_TEXT})
    return str(tasks["long-otters.txt"]["document_id"])


async def test_chunk_pages_open_at_their_first_chunk_and_a_page_past_the_end_shows_the_last(
    page: Page, stack: Stack, long_document: str
) -> None:
    """Next at the bottom of 50 chunks left the next page scrolled to its bottom (and the focus nowhere);
    a chunk page past the end said "No chunks" under "Chunks 4951–4950"."""
    doc_id = long_document
    await page.goto(f"{stack.base_url}/#/documents/{doc_id}")
    pager = page.locator(".pager span")
    await expect(pager).to_contain_text("Chunks 1–50 of ")
    total = int((await pager.inner_text()).rsplit(" ", 1)[1])
    assert total > 100
    next_button = page.get_by_role("button", name="Next chunks")
    await next_button.focus()
    await page.keyboard.press("Enter")
    await expect(pager).to_contain_text(f"Chunks 51–100 of {total}")
    await expect(page.get_by_role("heading", name="Chunks")).to_be_focused()
    await expect(page.locator(".chunk .chunk-head span").first).to_have_text("Chunk 51")
    await expect(page.locator(".chunk").first).to_be_in_viewport()

    await page.goto(f"{stack.base_url}/#/documents/{doc_id}?page=999")
    last = (total - 1) // 50 + 1
    await expect(pager).to_contain_text(f"Chunks {(last - 1) * 50 + 1}–{total} of {total}")
    assert page.url.endswith(f"?page={last}")
    await expect(page.get_by_text("This document has no chunks.")).to_have_count(0)
    await expect(page.get_by_label("Page of chunks")).to_have_value(str(last))
    # Further than the API pages (an offset over 2**31 - 1): its 422 read as "Document not found".
    await page.goto(f"{stack.base_url}/#/documents/{doc_id}?page=99999999999")
    await expect(page).to_have_url(re.compile(rf"\?page={last}$"))
    await expect(pager).to_contain_text(f"Chunks {(last - 1) * 50 + 1}–{total} of {total}")
    # Page 0 or no number: the first page.
    await page.goto(f"{stack.base_url}/#/documents/{doc_id}?page=zero")
    await expect(pager).to_contain_text(f"Chunks 1–50 of {total}")
    await expect(page.get_by_label("Page of chunks")).to_have_value("1")


async def test_the_chunk_pager_goes_to_the_last_chunks_and_to_a_page_typed(
    page: Page, stack: Stack, long_document: str
) -> None:
    """Only Previous and Next: the last chunks of a document of 50,000 were a thousand clicks away."""
    await page.goto(f"{stack.base_url}/#/documents/{long_document}")
    pager = page.locator(".pager span")
    await expect(pager).to_contain_text("Chunks 1–50 of ")
    total = int((await pager.inner_text()).rsplit(" ", 1)[1])
    last = (total - 1) // 50 + 1
    assert last >= 3
    number = page.get_by_label("Page of chunks")
    await expect(number).to_have_value("1")
    await expect(page.locator(".pager-page")).to_have_text(f"Page of {last}")
    await expect(page.get_by_role("button", name="First chunks")).to_be_disabled()
    heads = page.locator(".chunk .chunk-head span:first-child")

    await page.get_by_role("button", name="Last chunks").click()
    await expect(pager).to_have_text(f"Chunks {(last - 1) * 50 + 1}–{total} of {total}")
    await expect(heads.last).to_have_text(f"Chunk {total}")
    await expect(number).to_have_value(str(last))
    await expect(page.get_by_role("button", name="Last chunks")).to_be_disabled()
    await expect(page.get_by_role("button", name="Next chunks")).to_be_disabled()
    assert page.url.endswith(f"?page={last}")

    # A page typed, Enter: there, at its first chunk; the URL holds it, reload and back keep it.
    await number.fill("2")
    await number.press("Enter")
    await expect(pager).to_have_text(f"Chunks 51–100 of {total}")
    await expect(heads.first).to_have_text("Chunk 51")
    await expect(page.get_by_role("heading", name="Chunks")).to_be_focused()
    assert page.url.endswith("?page=2")
    await page.reload()
    await expect(pager).to_have_text(f"Chunks 51–100 of {total}")
    await expect(number).to_have_value("2")
    await page.go_back()
    await expect(pager).to_have_text(f"Chunks {(last - 1) * 50 + 1}–{total} of {total}")
    # A number past the last page goes to the last page; First to the first.
    await number.fill("2")
    await number.press("Enter")
    await expect(pager).to_have_text(f"Chunks 51–100 of {total}")
    await number.fill("900")
    await number.press("Enter")
    await expect(number).to_have_value(str(last))
    await expect(pager).to_have_text(f"Chunks {(last - 1) * 50 + 1}–{total} of {total}")
    await page.get_by_role("button", name="First chunks").click()
    await expect(pager).to_have_text(f"Chunks 1–50 of {total}")
    await expect(heads.first).to_have_text("Chunk 1")
    assert page.url.endswith(long_document)


BIRD_TEXT = "\n\n".join(
    f"Section {i} is about the river otter's day number {i}. "
    + ("A kingfisher dives nearby. " if i % 2 == 0 else "")
    + "Otters swim, dive and eat fish. " * 20
    for i in range(150)
).encode()


async def test_find_in_chunks_keeps_the_matching_chunks_marked_and_paged(page: Page, stack: Stack) -> None:
    tasks = await upload_and_wait(stack, {"bird-otters.txt": BIRD_TEXT})
    doc_id = tasks["bird-otters.txt"]["document_id"]
    chunks: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60) as api:
        while True:
            got = (
                await api.get(f"/documents/{doc_id}/chunks", params={"offset": len(chunks), "limit": 200})
            ).json()
            chunks += got["items"]
            if len(chunks) >= got["total"]:
                break
    holding = [c["chunk_index"] for c in chunks if "kingfisher" in c["text"]]
    assert 50 < len(holding) < len(chunks)

    await page.goto(f"{stack.base_url}/#/documents/{doc_id}")
    pager = page.locator(".pager span")
    await expect(pager).to_contain_text(f"Chunks 1–50 of {len(chunks)}")
    find = page.get_by_label("Find in chunks")
    # Typing goes on where it was after the page is drawn again with the first matches.
    await find.press_sequentially("kingfish")
    await expect(page.locator("#find-count")).to_have_text(f"{len(holding)} chunks hold “kingfish”")
    await expect(find).to_be_focused()
    await find.press_sequentially("er")
    await expect(page.locator("#find-count")).to_have_text(f"{len(holding)} chunks hold “kingfisher”")
    assert "find=kingfisher" in page.url
    await expect(find).to_have_value("kingfisher")
    await expect(pager).to_have_text(f"Matches 1–50 of {len(holding)}")
    heads = page.locator(".chunk .chunk-head span:first-child")
    await expect(heads).to_have_text([f"Chunk {i + 1}" for i in holding[:50]])
    await expect(page.locator(".chunk-text mark").first).to_have_text("kingfisher")
    assert await page.locator(".chunk-text mark").count() >= 50
    await page.get_by_role("button", name="Next chunks").click()
    await expect(pager).to_have_text(f"Matches 51–{len(holding)} of {len(holding)}")
    await expect(heads).to_have_text([f"Chunk {i + 1}" for i in holding[50:]])
    # The pager's pages are the matches' (2), not the document's.
    await expect(page.locator(".pager-page")).to_have_text("Page of 2")
    await page.get_by_role("button", name="First chunks").click()
    await expect(pager).to_have_text(f"Matches 1–50 of {len(holding)}")
    await page.get_by_role("button", name="Last chunks").click()
    await expect(pager).to_have_text(f"Matches 51–{len(holding)} of {len(holding)}")
    assert "find=kingfisher" in page.url and "page=2" in page.url
    # Exact text; then every chunk again.
    await find.fill("KINGFISHER")
    await expect(
        page.get_by_text("No chunk holds “KINGFISHER” (exact text, case as written).")
    ).to_be_visible()
    await page.get_by_role("link", name="Show all chunks").click()
    await expect(pager).to_have_text(f"Chunks 1–50 of {len(chunks)}")
    await expect(find).to_have_value("")
    assert "find=" not in page.url


async def test_every_stored_file_type_can_be_filtered(page: Page, stack: Stack) -> None:
    """The Type filters (documents, search) offered no PowerPoint or Excel, types the server stores."""
    deck = pptx_bytes([{"title": "Beavers", "body": "Beavers build dams of branches and mud."}])
    await upload_and_wait(stack, {"beavers.pptx": deck})
    await page.get_by_role("link", name="Documents", exact=True).click()
    await page.get_by_label("Type").select_option("pptx")
    await expect(names(page)).to_have_text(["beavers.pptx"])
    await page.get_by_role("link", name="Search", exact=True).click()
    await page.get_by_label("Query").fill("beavers dams")
    await page.get_by_label("File type").select_option("pptx")
    await expect(page.locator(".hit .hit-title a")).to_have_text(["beavers.pptx"])
    await expect(page.get_by_label("File type").locator("option")).to_have_text(
        ["All types", "PDF", "DOCX", "PPTX", "XLSX", "TXT", "MD", "HTML", "CSV", "JSON"]
    )


async def test_after_a_delete_the_focus_goes_to_the_next_row(page: Page, stack: Stack) -> None:
    """The deleted row took the keyboard focus with it: the next Tab started over at the top of the page."""
    await upload_and_wait(stack, {"focus-a.txt": b"Focus A is about larks.", "focus-b.txt": b"B: owls."})
    await page.goto(stack.base_url + "/#/documents?sort=name&order=asc")
    await page.get_by_role("button", name="Delete focus-a.txt").focus()
    await page.keyboard.press("Enter")
    await page.get_by_role("dialog").get_by_role("button", name="Delete").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("link", name="focus-a.txt")).to_have_count(0)
    await expect(page.get_by_role("link", name="focus-b.txt")).to_be_focused()


async def test_an_editor_selects_documents_and_deletes_them_together(page: Page, stack: Stack) -> None:
    name = "bulk-select"
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as admin:
        assert (await admin.post("/collections", json={"name": name})).status_code == 201
    files = {f"pick-{i}.txt": f"Pick {i} is about wrens, number {i}.".encode() for i in range(1, 5)}
    tasks = await upload_and_wait(stack, files, collection=name)
    await page.goto(stack.base_url + "/#/documents?sort=name&order=asc")
    await page.reload()  # the switcher lists the collections there were at sign-in
    await page.get_by_label("Collection").select_option(name)
    await expect(names(page)).to_have_count(4)
    bar = page.locator(".bulk-bar")
    await expect(bar).to_be_hidden()
    select_all = page.get_by_label("Select every document on this page")

    await page.get_by_label("Select pick-1.txt").check()
    await page.get_by_label("Select pick-3.txt").check()
    await expect(bar).to_contain_text("2 documents selected")
    assert await select_all.evaluate("box => box.indeterminate")
    await page.screenshot(path="/tmp/shots/documents-selected.png")
    await bar.get_by_role("button", name="Delete selected").click()
    dialog = page.get_by_role("dialog", name="Confirm")
    await expect(dialog).to_contain_text("Delete 2 documents in the collection bulk-select?")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(names(page)).to_have_count(4)  # "no" keeps them, and the selection
    await expect(bar).to_contain_text("2 documents selected")
    await bar.get_by_role("button", name="Delete selected").click()
    await page.get_by_role("dialog", name="Confirm").get_by_role("button", name="Delete").click()
    await expect(page.locator(".toast").last).to_have_text("Deleted 2 documents")
    await expect(names(page)).to_have_text(["pick-2.txt", "pick-4.txt"])
    await expect(bar).to_be_hidden()

    # Every row of the page; one of them deleted meanwhile elsewhere.
    await select_all.check()
    await expect(bar).to_contain_text("2 documents selected")
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as client:
        gone = await client.delete(f"/documents/{tasks['pick-4.txt']['document_id']}")
        assert gone.status_code == 204
    await bar.get_by_role("button", name="Delete selected").click()
    await page.get_by_role("dialog", name="Confirm").get_by_role("button", name="Delete").click()
    await expect(page.locator(".toast").last).to_have_text("Deleted 1 document; 1 was already gone")
    await expect(page.get_by_text("No documents in this collection yet.")).to_be_visible()
    await expect(page.get_by_role("heading", name="Documents")).to_be_focused()
    await page.get_by_label("Collection").select_option("default")


async def test_all_documents_matching_a_metadata_filter_are_deleted_across_pages(
    page: Page, stack: Stack
) -> None:
    """Every row of a page ticked: "Select all 12 matching" acts on the filter's 12 documents over two
    pages (through the API's selection); one outside the filter stays. A name filter, which the API's
    selection cannot say, is not offered it."""
    name = "all-matching"
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as admin:
        assert (await admin.post("/collections", json={"name": name})).status_code == 201
    files = {f"m-{i:02d}.txt": f"Match {i} is about herons.".encode() for i in range(1, 13)}
    files["keep.txt"] = b"Keep me: about herons too."
    teams = {n: {"team": "x" if n.startswith("m-") else "y"} for n in files}
    await upload_and_wait(stack, files, collection=name, file_metadata=teams)
    await page.goto(stack.base_url + "/#/documents?sort=name&order=asc&per=10")
    await page.reload()  # the switcher lists the collections there were at sign-in
    await page.get_by_label("Collection").select_option(name)
    await page.get_by_label("Metadata", exact=True).fill('{"team": "x"}')
    await expect(page).to_have_url(re.compile("meta="))
    await expect(page.locator(".pager")).to_contain_text("of 12")
    offer = page.locator(".select-matching")
    await page.get_by_label("Name", exact=True).fill("m-")  # the API's selection has no name filter
    await expect(page).to_have_url(re.compile("name=m-"))
    await expect(page.locator(".pager")).to_contain_text("of 12")
    await page.get_by_label("Select every document on this page").check()
    await expect(page.locator(".bulk-bar")).to_contain_text("10 documents selected")
    await expect(offer).to_be_hidden()
    await page.get_by_label("Name", exact=True).fill("")
    await expect(page).not_to_have_url(re.compile("name="))
    await expect(page.locator(".bulk-bar")).to_contain_text("10 documents selected")
    await expect(offer).to_have_text("All 10 on this page are selected. Select all 12 matching")
    await offer.get_by_role("button", name="Select all 12 matching").click()
    await expect(offer).to_have_text("All 12 matching documents are selected. Clear selection")
    bar = page.locator(".bulk-bar")
    await expect(bar).to_contain_text("All 12 documents matching selected")
    await bar.get_by_role("button", name="Set metadata").click()
    edit = page.get_by_role(
        "dialog",
        name="Set metadata of all 12 documents matching these filters in the collection all-matching",
    )
    await edit.get_by_label("Metadata (a JSON object)").fill('{"checked": true}')
    await edit.get_by_role("button", name="Set metadata").click()
    await expect(page.locator(".toast").last).to_have_text("Metadata set on 12 documents")
    await expect(offer).to_contain_text("All 12 matching documents are selected.")  # still, for the delete
    # Another filter: from the moment it is typed (its page held back here), "all matching" is let go: it
    # would act on the old filter's documents while the new one shows.
    held = asyncio.Event()

    async def hold(route: Route) -> None:
        await held.wait()
        with contextlib.suppress(PlaywrightError):  # a request the page aborted meanwhile (a newer load)
            await route.continue_()

    def listing(url: str) -> bool:
        return "/documents?" in url

    await page.route(listing, hold)
    await page.get_by_label("Metadata", exact=True).fill('{"team": "x", "checked": true}')
    await expect(page).to_have_url(re.compile("checked"))
    await expect(bar).not_to_contain_text("All 12")
    held.set()
    await page.unroute(listing, hold)
    await expect(page.locator(".pager")).to_contain_text("of 12")
    await page.get_by_label("Select every document on this page").check()
    await offer.get_by_role("button", name="Select all 12 matching").click()
    await bar.get_by_role("button", name="Delete selected").click()
    dialog = page.get_by_role("dialog", name="Confirm")
    await expect(dialog).to_contain_text(
        "Delete all 12 documents matching these filters in the collection all-matching?"
    )
    await dialog.get_by_role("button", name="Delete").click()
    await expect(page.locator(".toast").last).to_have_text("Deleted 12 documents")
    await expect(page.get_by_text("No document matches these filters.")).to_be_visible()
    await page.get_by_role("link", name="Clear filters").first.click()
    await expect(names(page)).to_have_text(["keep.txt"])
    await page.get_by_label("Collection").select_option("default")


async def test_an_editor_sets_the_metadata_of_selected_documents_together(
    page: Page, stack: Stack, page_console: Console
) -> None:
    page_console.allow("422")  # the value only the server refuses
    name = "bulk-metadata"
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as admin:
        assert (await admin.post("/collections", json={"name": name})).status_code == 201
    files = {f"tag-{i}.txt": f"Tag {i} is about finches, number {i}.".encode() for i in range(1, 4)}
    await upload_and_wait(stack, files, collection=name, file_metadata={"tag-2.txt": {"keep": 1}})
    await page.goto(stack.base_url + "/#/documents?sort=name&order=asc")
    await page.reload()  # the switcher lists the collections there were at sign-in
    await page.get_by_label("Collection").select_option(name)
    await expect(names(page)).to_have_count(3)
    bar = page.locator(".bulk-bar")
    await page.get_by_label("Select tag-1.txt").check()
    await page.get_by_label("Select tag-2.txt").check()
    await bar.get_by_role("button", name="Set metadata").click()
    dialog = page.get_by_role("dialog", name="Set metadata of 2 documents")
    field = dialog.get_by_label("Metadata (a JSON object)")
    await expect(field).to_be_focused()
    # Empty, or not JSON: said in the dialog, nothing sent. Refused by the server: its sentence.
    await dialog.get_by_role("button", name="Set metadata").click()
    await expect(dialog.get_by_role("alert")).to_contain_text("Write a JSON object")
    await field.fill('{"flock": ')
    await dialog.get_by_role("button", name="Set metadata").click()
    await expect(dialog.get_by_role("alert")).to_contain_text("Not valid JSON")
    await field.fill(json.dumps({"k" * 201: 1}))
    await dialog.get_by_role("button", name="Set metadata").click()
    await expect(dialog.get_by_role("alert")).to_contain_text("Metadata: every key must be a string of 1 to")
    await page.screenshot(path="/tmp/shots/documents-set-metadata.png")
    # Merged into each one's own metadata.
    await field.fill('{"flock": "north"}')
    await dialog.get_by_role("button", name="Set metadata").click()
    await expect(page.locator(".toast").last).to_have_text("Metadata set on 2 documents")
    await expect(dialog).to_be_hidden()
    await expect(bar).to_contain_text("2 documents selected")
    await page.get_by_label("Metadata", exact=True).fill('{"flock": "north"}')
    await expect(names(page)).to_have_text(["tag-1.txt", "tag-2.txt"])
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as client:
        listed = (
            await client.get("/documents", params={"collection": name, "sort": "name", "order": "asc"})
        ).json()
    assert [d["metadata"] for d in listed["items"]] == [{"flock": "north"}, {"flock": "north", "keep": 1}, {}]
    # Replace: the object becomes each one's whole metadata.
    await bar.get_by_role("button", name="Set metadata").click()
    dialog = page.get_by_role("dialog", name="Set metadata of 2 documents")
    await dialog.get_by_label("Metadata (a JSON object)").fill('{"flock": "south"}')
    await dialog.get_by_label("Replace", exact=False).check()
    await dialog.get_by_label("Replace", exact=False).press("Enter")  # submits (Cancel is no submit button)
    await expect(page.get_by_text("No document matches these filters.")).to_be_visible()
    await page.get_by_label("Metadata", exact=True).fill('{"flock": "south"}')
    await expect(names(page)).to_have_text(["tag-1.txt", "tag-2.txt"])
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as client:
        listed = (
            await client.get("/documents", params={"collection": name, "sort": "name", "order": "asc"})
        ).json()
    assert [d["metadata"] for d in listed["items"]] == [{"flock": "south"}, {"flock": "south"}, {}]
    await page.get_by_label("Collection").select_option("default")


async def test_an_imported_documents_text_is_saved_under_a_name_that_says_so(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    # A CSV exported and imported into another collection: the copy's stored file is its chunk text
    # (text/plain), so the browser saves it as people.csv.txt, not as a CSV file it is not.
    await upload_and_wait(stack, {"people.csv": b"name,city\nAda,London\nAlan,Wilmslow\n"})
    exported = tmp_path / "default.jsonl"
    for args in (
        ["export", "--collection", "default", str(exported)],
        ["import", "jsonl", str(exported), "--collection", "imported", "--quiet"],
    ):
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "rag_server", *args],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as client:
        listed = await client.get("/documents", params={"collection": "imported", "limit": 500})
    [doc_id] = [d["id"] for d in listed.json()["items"] if d["filename"] == "people.csv"]

    await page.goto(f"{stack.base_url}/#/documents/{doc_id}")
    async with page.expect_download() as info:
        await page.get_by_role("button", name="Download", exact=True).click()
    downloaded = await info.value
    assert downloaded.suggested_filename == "people.csv.txt"


async def test_a_document_being_processed_shows_its_chunks_when_ready_without_a_reload(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    """The page said "queued" until it was reloaded by hand."""
    stack.worker.stop()  # no worker: the document stays queued while the page is opened
    try:
        async with httpx.AsyncClient(
            base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
        ) as client:
            content = b"Lambda waits in the queue, then talks about lighthouses. " * 5
            response = await client.post("/upload", files=[("files", ("lambda.txt", content))])
            assert response.status_code == 202, response.text
            doc_id = response.json()["tasks"][0]["document_id"]
        await page.goto(f"{stack.base_url}/#/documents/{doc_id}")
        await expect(page.locator(".document-detail .badge")).to_have_text("queued")
    finally:
        stack.worker = start_worker(stack.env, tmp_path / "worker.log")
    await expect(page.locator(".document-detail .badge")).to_have_text("ready", timeout=60_000)
    await expect(page.locator(".chunk-text").first).to_contain_text("talks about lighthouses")


async def test_a_document_deleted_in_another_tab_says_so_where_it_is_still_shown(
    page: Page, stack: Stack, page_console: Console
) -> None:
    """Saving its metadata said "no document 3f2a…" (the server's 404, naming the id); deleting it again
    said "Not deleted" and left the page up."""
    page_console.allow("404")
    tasks = await upload_and_wait(stack, {"mu.txt": b"Mu is a document about to be deleted elsewhere."})
    doc_id = tasks["mu.txt"]["document_id"]
    await page.goto(f"{stack.base_url}/#/documents/{doc_id}")
    await expect(page.get_by_role("heading", name="mu.txt")).to_be_visible()
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as client:
        assert (await client.delete(f"/documents/{doc_id}")).status_code == 204

    await page.get_by_role("button", name="Edit metadata").click()
    await page.get_by_role("button", name="Save metadata").click()
    gone = "This document no longer exists: it was deleted, perhaps in another tab."
    await expect(page.locator("#metadata-error")).to_have_text(gone)

    await page.locator(".page-head").get_by_role("button", name="Delete").click()
    await page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    await expect(page.get_by_text("mu.txt was already deleted, perhaps in another tab")).to_be_visible()
    await expect(page.get_by_role("columnheader", name="Name")).to_be_visible()  # back on the list


async def test_back_closes_a_confirmation_and_counts_it_as_no(
    page: Page, documents: dict[str, dict[str, Any]]
) -> None:
    """The confirmation stayed open over the page Back led to, where its "Delete" still deleted."""
    await page.get_by_role("link", name="Search", exact=True).click()
    await page.get_by_role("link", name="Documents", exact=True).click()
    await page.get_by_role("button", name="Delete doc-07.txt").click()
    await expect(page.get_by_role("dialog")).to_contain_text("Delete “doc-07.txt”?")
    await page.go_back()
    await expect(page.get_by_role("heading", name="Search")).to_be_visible()
    await expect(page.get_by_role("dialog")).to_have_count(0)
    await page.go_forward()
    await expect(page.get_by_role("link", name="doc-07.txt")).to_be_visible()


async def test_on_a_phone_a_long_name_takes_the_room_and_stops_at_three_lines(
    browser: Browser, stack: Stack, page_console: Console
) -> None:
    """A 200-character name wrapped every few letters in a column of ~60 px: one row as tall as the screen."""
    name = "very_long_document_name_without_any_spaces_" * 4 + ".md"
    await upload_and_wait(stack, {name: b"# Long\n\nA document with a long name."})
    phone = await new_page(browser, page_console, viewport={"width": 390, "height": 844})
    await sign_in(phone, stack.base_url, stack.admin_key)
    await phone.goto(stack.base_url + "/#/documents?name=very_long_document")
    link = phone.get_by_role("link", name=name)
    await expect(link).to_be_visible()
    box = await link.bounding_box()
    line = await link.evaluate("el => parseFloat(getComputedStyle(el).lineHeight)")
    assert box is not None and box["width"] >= 150 and box["height"] <= 3.5 * line, (box, line)
    await phone.context.close()


NATURAL_FILES = {
    "part 10.txt": b"Rivers and herons, with a capital.",
    "part 2.txt": b"A heron in the reeds.",
    "part 11.txt": b"Nothing of birds here.",
    "Part 3.txt": b"Otters in the river at dusk.",
    "part 1.txt": b"A heron by the river.",
}


async def test_names_sort_in_natural_order_and_contains_typed_quickly_shows_the_last_text(
    page: Page, stack: Stack
) -> None:
    """Sorting by name is natural order ("part 2" before "part 10"). Typing in "Contains" while the
    listing's statements wait in PostgreSQL (a lock this test holds): each pause's request supersedes the
    one before, which the browser aborts and the server stops (its statement gone from pg_stat_activity:
    one waits, not one per pause); once the lock is released the table shows the last text's matches,
    with no error on the page or in its console."""
    name = "natural"
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as admin:
        assert (await admin.post("/collections", json={"name": name})).status_code == 201
    await upload_and_wait(stack, NATURAL_FILES, collection=name)
    await page.goto(stack.base_url + "/#/documents?sort=name&order=asc")
    await page.reload()  # the switcher lists the collections there were at sign-in
    await page.get_by_label("Collection").select_option(name)
    natural = ["part 1.txt", "part 2.txt", "Part 3.txt", "part 10.txt", "part 11.txt"]
    await expect(names(page)).to_have_text(natural)
    await page.get_by_role("columnheader", name="Name").get_by_role("button").click()
    await expect(names(page)).to_have_text(natural[::-1])
    await page.get_by_role("columnheader", name="Name").get_by_role("button").click()
    await expect(names(page)).to_have_text(natural)

    locker = await asyncpg.connect(stack.database_url)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE documents IN ACCESS EXCLUSIVE MODE")
            # Pauses longer than the app's wait before asking (300 ms): one request per letter.
            await page.get_by_label("Contains", exact=True).press_sequentially("river", delay=450)
            await page.wait_for_timeout(500)

            async def listings_waiting() -> int:
                await locker.execute("SELECT pg_stat_clear_snapshot()")
                return int(
                    await locker.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query LIKE '%WITH matching AS MATERIALIZED%'"
                    )
                )

            for _ in range(100):
                if await listings_waiting() == 1:
                    break
                await asyncio.sleep(0.1)
            # The superseded ones were aborted by the browser (else their connections stayed open)
            # and so stopped by the server, not left waiting.
            assert await listings_waiting() == 1
    finally:
        await locker.close()
    await expect(names(page)).to_have_text(["part 1.txt", "Part 3.txt"])
    assert "has=river" in page.url
    await expect(page.locator(".documents .form-error")).to_have_text("")  # no error for an abort
    await page.get_by_label("Collection").select_option("default")


async def test_at_1280_px_sizes_and_dates_stay_on_one_line_beside_a_long_name(
    page: Page, stack: Stack
) -> None:
    """At 1280 px a long name beside it wrapped "293.0 KB" onto two lines. Seen by QA on 2026-12-07."""
    name = "b" * 200 + ".txt"
    await upload_and_wait(stack, {name: b"A document with a long name of one word."})

    async def big(route: Route) -> None:  # its size as the QA's file's: the widest a size is written
        answer = await route.fetch()
        data = await answer.json()
        for doc in data["items"]:
            doc["size_bytes"] = 300_032
        await route.fulfill(response=answer, json=data)

    await page.route(lambda url: "/documents?" in url, big)
    await page.goto(stack.base_url + "/#/documents?name=bbbbbbbb")
    row = page.locator(".documents-table tbody tr").first
    await expect(row.locator("td.num").nth(1)).to_have_text("293.0 KB")
    lines = """td => {
        const range = document.createRange();
        range.selectNodeContents(td);
        return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
    }"""
    assert await row.locator("td.num").nth(1).evaluate(lines) == 1
    assert await row.locator("td.nowrap").evaluate(lines) == 1
