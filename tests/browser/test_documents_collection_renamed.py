"""The Documents page's actions name its collection by id, not by the name the list was opened with: the
collection renamed meanwhile (another admin, the CLI) refused them (404 "no collection"), and another
collection given its old name meanwhile was the one acted on: "Delete all N matching" deleted that
collection's documents (QA, 2026-12-07)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from playwright.async_api import Page, expect

from tests.browser.conftest import Console, Stack
from tests.browser.seed import bearer, upload_and_wait


def _admin(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60)


async def _documents(stack: Stack, collection: str) -> dict[str, dict[str, Any]]:
    async with _admin(stack) as api:
        listed = await api.get("/documents", params={"collection": collection, "limit": 200})
        assert listed.status_code == 200, listed.text
    return {d["filename"]: d for d in listed.json()["items"]}


async def _open(page: Page, stack: Stack, collection: str, query: str = "") -> None:
    await page.reload()
    await page.get_by_role("navigation", name="Main").wait_for()
    await page.locator("select#collection").select_option(collection)
    await page.goto(f"{stack.base_url}/#/documents{query}")


async def test_actions_on_selected_rows_act_on_the_collection_renamed_since_the_list_opened(
    page: Page, stack: Stack, page_console: Console
) -> None:
    page_console.allow("404")  # the list's refresh under the old name, which the tab follows
    async with _admin(stack) as api:
        created = await api.post("/collections", json={"name": "shelf"})
        assert created.status_code == 201, created.text
    shelf = created.json()["id"]
    await upload_and_wait(stack, {"atlas.txt": b"An atlas of rivers.", "bestiary.txt": b"Beasts."}, "shelf")
    await _open(page, stack, "shelf")
    await page.get_by_label("Select atlas.txt").check()

    async with _admin(stack) as api:
        assert (await api.patch(f"/collections/{shelf}", json={"name": "stacks"})).status_code == 200
    bar = page.locator(".bulk-bar")
    await bar.get_by_role("button", name="Set metadata").click()
    dialog = page.get_by_role("dialog", name="Set metadata of 1 document in the collection shelf")
    await dialog.get_by_label("Metadata (a JSON object)").fill('{"read": true}')
    await dialog.get_by_role("button", name="Set metadata").click()
    await expect(page.locator(".toast-info").last).to_contain_text("1 document")
    docs = await _documents(stack, shelf)
    assert docs["atlas.txt"]["metadata"] == {"read": True}
    # The list's refresh under the old name: the tab follows the new one.
    await expect(page.locator("select#collection")).to_have_value("stacks")

    # Renamed again while a row is selected: the delete still reaches it.
    await page.get_by_label("Select bestiary.txt").check()
    async with _admin(stack) as api:
        assert (await api.patch(f"/collections/{shelf}", json={"name": "racks"})).status_code == 200
    await page.locator(".bulk-bar").get_by_role("button", name="Delete selected").click()
    await page.get_by_role("dialog", name="Confirm").get_by_role("button", name="Delete").click()
    await expect(page.locator(".toast-info").last).to_have_text("Deleted 1 document")
    assert set(await _documents(stack, shelf)) == {"atlas.txt"}
    await expect(page.locator("select#collection")).to_have_value("racks")


async def test_all_matching_acts_on_the_collection_shown_not_one_given_its_name_since(
    page: Page, stack: Stack, page_console: Console
) -> None:
    """Renamed, and a new collection made under its old name with documents of the same metadata:
    "Delete all 11 matching" sent the old name, and deleted the new collection's 11."""
    tag = {"box": "b"}
    files = {f"old-{i:02d}.txt": f"Old note {i}.".encode() for i in range(11)}
    async with _admin(stack) as api:
        created = await api.post("/collections", json={"name": "boxes"})
        assert created.status_code == 201, created.text
    boxes = created.json()["id"]
    await upload_and_wait(stack, files, "boxes", file_metadata=dict.fromkeys(files, tag))
    await _open(page, stack, "boxes", "?sort=name&order=asc&per=10")
    await page.get_by_label("Metadata", exact=True).fill(json.dumps(tag))
    await expect(page).to_have_url(re.compile("meta="))
    await expect(page.locator(".pager")).to_contain_text("of 11")
    await page.get_by_label("Select every document on this page").check()
    await page.locator(".select-matching").get_by_role("button", name="Select all 11 matching").click()

    async with _admin(stack) as api:
        assert (await api.patch(f"/collections/{boxes}", json={"name": "crates"})).status_code == 200
        swapped = await api.post("/collections", json={"name": "boxes"})
        assert swapped.status_code == 201, swapped.text
    others = {f"new-{i:02d}.txt": f"New note {i}.".encode() for i in range(11)}
    await upload_and_wait(stack, others, "boxes", file_metadata=dict.fromkeys(others, tag))

    await page.locator(".bulk-bar").get_by_role("button", name="Delete selected").click()
    dialog = page.get_by_role("dialog", name="Confirm")
    await expect(dialog).to_contain_text("Delete all 11 documents matching these filters")
    await dialog.get_by_role("button", name="Delete").click()
    await expect(page.locator(".toast-info").last).to_have_text("Deleted 11 documents")
    assert await _documents(stack, boxes) == {}
    assert set(await _documents(stack, swapped.json()["id"])) == set(others)
    # The list read again by name found the new "boxes": not shown as this view's, the tab follows its own
    # collection to its new name (review: it listed the new one and acted on the old).
    await expect(page.locator("select#collection")).to_have_value("crates")
    await expect(page.get_by_role("link", name="new-00.txt")).to_have_count(0)
