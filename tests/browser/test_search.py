"""The Search view: every mode shows results with both legs' rank and score and the per-stage timings,
filters narrow the results, the query lives in the URL; text from documents is only ever text."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import Console, Stack, new_page, sign_in
from tests.browser.seed import bearer, upload_and_wait

INJECTION = (
    '<script>window.__pwned=1</script> and <img src=x onerror="window.__pwned=1"> in a pwnedmarker note.'
)
FILES = {
    "otters.txt": b"Sea otters float on their backs and crack shellfish with stones. Otters hold hands.",
    "volcano.md": b"# Volcanoes\n\nMagma rises through the crust and erupts as lava, building islands.",
    "kitchen.txt": b"A recipe: simmer tomatoes with garlic and basil, then season the sauce with salt.",
    "injection.txt": INJECTION.encode(),
}


METADATA = {
    "otters.txt": {"topic": "animals", "year": 2020},
    "volcano.md": {"topic": "earth"},
    "kitchen.txt": {"topic": "food", "tags": ["quick", "vegan"]},
}


@pytest.fixture(scope="module")
async def documents(stack: Stack) -> dict[str, dict[str, Any]]:
    tasks = await upload_and_wait(stack, FILES, file_metadata=METADATA)
    assert {t["status"] for t in tasks.values()} == {"completed"}, tasks
    return tasks


async def search(page: Page, query: str, mode: str) -> None:
    await page.get_by_label("Query").fill(query)
    await page.get_by_role("radio", name=mode, exact=True).check()
    await page.get_by_role("button", name="Search", exact=True).click()


async def test_each_mode_shows_results_with_both_legs_and_timings(
    page: Page, documents: dict[str, dict[str, Any]]
) -> None:
    await page.get_by_role("link", name="Search", exact=True).click()
    hits = page.locator(".hit")

    await search(page, "otters shellfish", "Hybrid")
    await expect(hits.first.locator(".hit-title a")).to_have_text("otters.txt")
    await expect(hits.first.locator(".hit-title .muted")).to_have_text("chunk 1")  # chunk_index 0
    # The words matched by BM25 carry both legs; documents only the vector leg found show "—" for BM25.
    first_legs = hits.first.locator(".leg")
    await expect(first_legs.nth(0)).to_contain_text("Vector#")
    await expect(first_legs.nth(1)).to_contain_text("BM25#1")
    await expect(hits).to_have_count(4)
    await expect(hits.last.locator(".leg.missing")).to_have_text("BM25—")
    timings = page.locator(".timings")
    for stage in ("embed query", "vector leg", "BM25 leg", "fusion", "total"):
        await expect(timings).to_contain_text(stage)
    await expect(hits.first.locator(".hit-text mark").first).to_have_text("otters", ignore_case=True)
    assert "q=otters+shellfish" in page.url
    await page.screenshot(path="/tmp/shots/search.png", full_page=True)

    await search(page, "shellfish", "BM25")
    await expect(hits).to_have_count(1)
    await expect(hits.first.locator(".leg").nth(0)).to_have_text("Vector—")
    await expect(hits.first.locator(".leg").nth(1)).to_contain_text("BM25#1")
    await expect(timings).to_contain_text("BM25 leg")
    await expect(timings).not_to_contain_text("vector leg")
    assert "mode=bm25" in page.url

    await search(page, "lava and magma", "Vector")
    await expect(hits.first.locator(".hit-title a")).to_have_text("volcano.md")
    await expect(hits.first.locator(".leg").nth(0)).to_contain_text("Vector#1")
    await expect(hits.first.locator(".leg").nth(1)).to_have_text("BM25—")
    await expect(timings).to_contain_text("embed query")
    assert "mode=vector" in page.url

    # Reload: the query, the mode and the results come back from the URL.
    await page.reload()
    await expect(page.get_by_label("Query")).to_have_value("lava and magma")
    await expect(page.get_by_role("radio", name="Vector", exact=True)).to_be_checked()
    await expect(hits.first.locator(".hit-title a")).to_have_text("volcano.md")


async def test_filters_by_file_type_and_document(page: Page, documents: dict[str, dict[str, Any]]) -> None:
    await page.get_by_role("link", name="Search", exact=True).click()
    hits = page.locator(".hit")
    await search(page, "otters lava recipe", "Hybrid")
    await expect(hits).to_have_count(4)
    await page.get_by_label("File type").select_option("md")
    await expect(hits).to_have_count(1)
    await expect(hits.first.locator(".hit-title a")).to_have_text("volcano.md")
    assert "type=md" in page.url
    await page.get_by_label("File type").select_option("")
    await page.get_by_label("Document").select_option(label="kitchen.txt")
    await expect(hits).to_have_count(1)
    await expect(hits.first.locator(".hit-title a")).to_have_text("kitchen.txt")
    assert f"doc={documents['kitchen.txt']['document_id']}" in page.url
    # A hit links to its document's chunks.
    await hits.first.locator(".hit-title a").click()
    await expect(page.get_by_role("heading", name="kitchen.txt")).to_be_visible()


async def test_the_contains_filter_keeps_passages_holding_the_words(
    page: Page, documents: dict[str, dict[str, Any]]
) -> None:
    await page.get_by_role("link", name="Search", exact=True).click()
    hits = page.locator(".hit")
    await search(page, "otters lava recipe", "Hybrid")
    await expect(hits).to_have_count(4)
    await page.get_by_label("Contains", exact=True).fill("erupts as lava")
    await page.get_by_label("Contains", exact=True).press("Enter")
    await expect(hits.locator(".hit-title a")).to_have_text(["volcano.md"])
    assert "has=erupts" in page.url
    await page.reload()
    await expect(page.get_by_label("Contains", exact=True)).to_have_value("erupts as lava")
    await expect(hits.locator(".hit-title a")).to_have_text(["volcano.md"])
    await page.get_by_label("Contains", exact=True).fill("")
    await page.get_by_role("button", name="Search", exact=True).click()
    await expect(hits).to_have_count(4)
    assert "has=" not in page.url


async def test_the_metadata_filter_narrows_hits_lives_in_the_url_and_explains_what_it_refuses(
    page: Page, documents: dict[str, dict[str, Any]], page_console: Console
) -> None:
    page_console.allow("422")  # the filter only the server refuses, at the end
    await page.get_by_role("link", name="Search", exact=True).click()
    hits = page.locator(".hit")
    titles = hits.locator(".hit-title a")
    await search(page, "otters lava recipe", "Hybrid")
    await expect(hits).to_have_count(4)
    field = page.get_by_label("Metadata", exact=True)
    note = page.locator("#search-metadata-note")

    # A valid filter re-runs the query once typing pauses; a list value matches a list holding it.
    await field.fill('{"topic": "earth"}')
    await expect(titles).to_have_text(["volcano.md"])
    await field.fill('{"tags": "vegan"}')
    await expect(titles).to_have_text(["kitchen.txt"])
    assert "meta=" in page.url

    # Half-typed JSON: said under the field, marked, and neither searched nor sent by Enter.
    await field.fill('{"tags": ')
    await expect(note).to_contain_text("Not valid JSON")
    await expect(field).to_have_attribute("aria-invalid", "true")
    await field.press("Enter")
    await expect(field).to_be_focused()
    await expect(titles).to_have_text(["kitchen.txt"])
    await field.fill("[1, 2]")
    await expect(note).to_have_text('Metadata must be a JSON object, like {"team": "x"}.')
    await page.screenshot(path="/tmp/shots/search-metadata-refused.png")

    # Types are kept: the year 2020 is not the text "2020".
    await field.fill('{"year": "2020"}')
    await expect(page.locator(".search-status")).to_contain_text("No results.")
    await expect(note).to_be_hidden()
    await expect(field).not_to_have_attribute("aria-invalid", "true")
    await field.fill('{"year": 2020}')
    await expect(titles).to_have_text(["otters.txt"])

    # Back from the URL after a reload, with the query.
    await page.reload()
    await expect(page.get_by_label("Metadata", exact=True)).to_have_value('{"year":2020}')
    await expect(titles).to_have_text(["otters.txt"])

    # What only the server refuses (a nested object) is its sentence, and no hits of the search before.
    await field.fill('{"topic": {"nested": 1}}')
    await expect(page.get_by_role("alert").filter(has_text="metadata")).to_be_visible()
    await expect(hits).to_have_count(0)

    # Emptied: every hit again, no filter in the URL.
    await field.fill("")
    await expect(hits).to_have_count(4)
    assert "meta=" not in page.url


async def test_document_text_is_never_markup(page: Page, documents: dict[str, dict[str, Any]]) -> None:
    await page.get_by_role("link", name="Search", exact=True).click()
    await search(page, "pwnedmarker", "BM25")
    text = page.locator(".hit-text")
    await expect(text).to_have_count(1)
    await expect(text).to_contain_text("<script>window.__pwned=1</script>")
    await expect(text).to_contain_text('<img src=x onerror="window.__pwned=1">')
    assert await page.locator("main script, main img").count() == 0

    await page.locator(".hit-title a").click()
    chunk = page.locator(".chunk-text")
    await expect(chunk).to_contain_text("<script>window.__pwned=1</script>")
    await expect(chunk).to_contain_text('<img src=x onerror="window.__pwned=1">')
    assert await page.locator("main script, main img").count() == 0
    assert await page.evaluate("typeof window.__pwned") == "undefined"


async def test_search_on_a_phone_in_dark_mode_fits_the_screen(
    browser: Browser, stack: Stack, page_console: Console, documents: dict[str, dict[str, Any]]
) -> None:
    phone = await new_page(browser, page_console, viewport={"width": 375, "height": 740}, color_scheme="dark")
    await sign_in(phone, stack.base_url, stack.admin_key)
    await phone.goto(stack.base_url + "/#/search?q=otters+shellfish")
    await expect(phone.locator(".hit").first).to_be_visible()
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 375
    await phone.screenshot(path="/tmp/shots/search-phone-dark.png", full_page=True)
    await phone.context.close()
    assert not page_console.unexpected()


async def test_each_hit_is_read_as_its_result_number(
    page: Page, documents: dict[str, dict[str, Any]]
) -> None:
    """The rank's digit alone was read as "1" (its aria-label on a plain span was ignored): a screen reader
    says "Result 1", and the digit, drawn for the eye, is not read twice."""
    await page.goto(page.url.split("#")[0] + "#/search?q=otters+shellfish")
    hits = page.get_by_role("list", name="Results").get_by_role("listitem")
    await expect(hits).to_have_count(4)
    # Read first, before the document's name; no bare digit anywhere in the hit.
    await expect(hits.first).to_match_aria_snapshot('- listitem:\n  - text: Result 1\n  - link "otters.txt"')
    assert not re.search(r"^\s*- text: \"?1\"?$", await hits.first.aria_snapshot(), re.MULTILINE)
    await expect(hits.nth(3).get_by_text("Result 4", exact=True)).to_have_count(1)


async def test_a_failed_search_leaves_no_hits_of_the_query_before(
    page: Page, page_console: Console, documents: dict[str, dict[str, Any]]
) -> None:
    # The error showed above the previous query's hits and timings, which read as this query's answer.
    page_console.allow("422")
    await page.get_by_role("link", name="Search", exact=True).click()
    await search(page, "otters shellfish", "Hybrid")
    await expect(page.locator(".hit")).to_have_count(4)
    await search(page, "otters " * 3_000, "Hybrid")  # over the 20,000 characters a query may have
    await expect(page.get_by_role("alert")).to_contain_text("20000")
    await expect(page.locator(".hit")).to_have_count(0)
    await expect(page.locator(".timings")).to_have_count(0)


async def test_a_similarity_floor_lives_in_the_url_and_says_when_nothing_bears_on_the_query(
    page: Page, documents: dict[str, dict[str, Any]]
) -> None:
    await page.get_by_role("link", name="Search", exact=True).click()
    hits = page.locator(".hit")
    status = page.locator(".search-status")
    await search(page, "Who won the football world cup in 2014?", "Hybrid")
    await expect(hits.first).to_be_visible()  # search alone ranks whatever there is
    # So weak a vector answer is checked by an exact scan: a stage named like the others.
    timings = page.locator(".timings")
    await expect(timings).to_contain_text("exact vector recheck")
    await expect(timings).not_to_contain_text("vector_exact")
    await page.get_by_label("Min similarity").fill("0.3")
    await page.get_by_role("button", name="Search", exact=True).click()
    await expect(status).to_contain_text("nothing here bears on it")
    await expect(hits).to_have_count(0)
    assert "min=0.3" in page.url, page.url
    # A query about one of the documents keeps it, and only what reaches the floor.
    await search(page, "otters crack shellfish with stones", "Hybrid")
    await expect(hits.first.locator(".hit-title a")).to_have_text("otters.txt")
    await expect(hits).to_have_count(1)
    await expect(page.locator(".timings")).to_contain_text("similarity floor")
    await page.reload()
    await expect(page.get_by_label("Min similarity")).to_have_value("0.3")
    await expect(hits).to_have_count(1)
    floor = page.get_by_label("Min similarity")
    # Any value the API takes is one the field takes (a step would refuse 0.33 and block every search).
    await floor.fill("0.33")
    await page.get_by_role("button", name="Search", exact=True).click()
    await expect(page).to_have_url(re.compile(r"min=0\.33"))
    assert await floor.evaluate("el => el.validity.valid")
    await floor.fill("0.3")
    await page.get_by_role("button", name="Search", exact=True).click()
    await expect(page).to_have_url(re.compile(r"min=0\.3(&|$)"))
    # A value out of range is the field's to refuse (the browser says why); the search stays as it was.
    await floor.fill("7")
    await page.get_by_role("button", name="Search", exact=True).click()
    assert await floor.evaluate("el => el.validity.rangeOverflow")
    assert "min=0.3" in page.url, page.url
    # Emptied: no floor, every document ranked again.
    await floor.fill("")
    await page.get_by_role("button", name="Search", exact=True).click()
    await expect(hits).to_have_count(4)
    assert "min=" not in page.url, page.url


async def test_a_document_filter_is_dropped_with_the_collection_it_belongs_to(
    page: Page, stack: Stack, documents: dict[str, dict[str, Any]]
) -> None:
    """Switching collection kept the `doc` of the one left: every search of the new one found nothing."""
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as client:
        made = await client.post("/collections", json={"name": "search-elsewhere"})
        assert made.status_code in (201, 409), made.text
    doc_id = next(iter(documents.values()))["document_id"]
    await page.goto(f"{stack.base_url}/#/search?q=otters&doc={doc_id}")
    await page.reload()  # the collection list, with the new one
    await expect(page.locator("#search-doc")).to_have_value(doc_id)
    await page.get_by_label("Collection").select_option("search-elsewhere")
    await expect(page.locator("#search-doc")).to_have_value("")
    assert "doc=" not in page.url and "q=otters" in page.url, page.url


async def test_documents_of_the_same_name_are_told_apart_in_the_document_filter(
    page: Page, stack: Stack, documents: dict[str, dict[str, Any]]
) -> None:
    """A changed file uploaded again without replace is a second document of its name: both were listed
    as "notes.txt", and the filter could not say which one it searched."""
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as client:
        made = await client.post("/collections", json={"name": "same-names"})
        assert made.status_code in (201, 409), made.text
    first = await upload_and_wait(stack, {"notes.txt": b"Tide tables for the harbour."}, "same-names")
    second = await upload_and_wait(stack, {"notes.txt": b"Tide tables, revised."}, "same-names")
    await upload_and_wait(stack, {"alone.txt": b"A name given once."}, "same-names")
    await page.reload()  # the collection list, with the new one
    await page.get_by_label("Collection").select_option("same-names")
    await page.get_by_role("link", name="Search", exact=True).click()
    options = page.locator("#search-doc option")
    await expect(options).to_have_count(4)
    labels = {
        await option.get_attribute("value"): await option.text_content() for option in await options.all()
    }
    ids = [first["notes.txt"]["document_id"], second["notes.txt"]["document_id"]]
    named = [labels[i] or "" for i in ids]
    assert named[0] != named[1] and all(n.startswith("notes.txt (") for n in named), labels
    assert "alone.txt" in labels.values(), labels  # a name given once is shown as it is


async def test_the_document_filter_names_a_document_beyond_those_listed_and_says_how_many_are_not(
    page: Page, stack: Stack
) -> None:
    """The Document choice lists the first 500 documents by name. One past them (Documents' "Search in
    it") read "The chosen document", and nothing said that 2 of the 502 were not in the list at all."""
    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key)) as client:
        made = await client.post("/collections", json={"name": "search-many"})
        assert made.status_code == 201, made.text
    # Rows of ready documents (no chunks, no bytes: the list is all this reads), written at once.
    conn = await asyncpg.connect(stack.database_url)
    try:
        ids = await conn.fetch(
            """
            INSERT INTO documents
                (filename, file_type, content_type, size_bytes, sha256, status, collection_id)
            SELECT format('note-%s.txt', lpad(n::text, 3, '0')), 'txt', 'text/plain', 1,
                   encode(sha256(n::text::bytea), 'hex'), 'ready', $1
            FROM generate_series(0, 501) n ORDER BY n RETURNING id
            """,
            UUID(made.json()["id"]),
        )
    finally:
        await conn.close()
    last = str(ids[-1]["id"])
    await page.reload()  # the collection list, with the new one
    await page.get_by_label("Collection").select_option("search-many")
    await page.goto(f"{stack.base_url}/#/search?q=otters&doc={last}")
    choice = page.locator("#search-doc")
    await expect(choice).to_have_value(last)
    await expect(choice.locator("option:checked")).to_have_text("note-501.txt")
    await expect(choice.locator("option[disabled]")).to_contain_text("2 more")
