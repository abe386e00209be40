""" "Select all N matching" acts on the N the user confirmed: a document of the same metadata uploaded
meanwhile (another editor, the API) makes the selection hold another number, and the API, sent that N as
`expected_count`, refuses (409 selection_changed) with nothing deleted or written. The page shows its
sentence, lets go of "all matching" and shows the list again."""

from __future__ import annotations

import json
import re

import httpx
from playwright.async_api import Page, expect

from tests.browser.conftest import Console, Stack
from tests.browser.seed import bearer, upload_and_wait

TEAM = {"team": "x"}


async def _matching(stack: Stack, metadata: dict[str, object]) -> int:
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as admin:
        listed = await admin.get("/documents", params={"metadata": json.dumps(metadata), "limit": 1})
        assert listed.status_code == 200, listed.text
        return int(listed.json()["total"])


async def test_all_matching_refused_when_a_document_was_uploaded_since_it_was_confirmed(
    page: Page, stack: Stack, page_console: Console
) -> None:
    page_console.allow("409")  # the browser logs the refused request
    files = {f"m-{i:02d}.txt": f"Match {i} is about plovers.".encode() for i in range(1, 13)}
    await upload_and_wait(stack, files, file_metadata=dict.fromkeys(files, TEAM))
    await page.goto(stack.base_url + "/#/documents?sort=name&order=asc&per=10")
    await page.get_by_label("Metadata", exact=True).fill(json.dumps(TEAM))
    await expect(page).to_have_url(re.compile("meta="))
    pager, bar, offer = page.locator(".pager"), page.locator(".bulk-bar"), page.locator(".select-matching")
    await expect(pager).to_contain_text("of 12")
    await page.get_by_label("Select every document on this page").check()
    await offer.get_by_role("button", name="Select all 12 matching").click()
    await expect(bar).to_contain_text("All 12 documents matching selected")

    # Another editor uploads a document of the same metadata: the list on show still says 12.
    await upload_and_wait(
        stack, {"m-13.txt": b"Match 13 is about plovers too."}, file_metadata={"m-13.txt": TEAM}
    )
    await bar.get_by_role("button", name="Delete selected").click()
    dialog = page.get_by_role("dialog", name="Confirm")
    await expect(dialog).to_contain_text("Delete all 12 documents matching these filters")
    await dialog.get_by_role("button", name="Delete").click()
    toast = page.locator(".toast-error").last
    await expect(toast).to_contain_text(
        "Delete failed: the selection now holds 13 documents, not the 12 confirmed"
    )
    await expect(toast).to_contain_text("nothing was deleted")
    assert await _matching(stack, TEAM) == 13
    # "All matching" let go, the list shown again (its 13), nothing else.
    await expect(pager).to_contain_text("of 13")
    await expect(bar).to_be_hidden()
    await expect(offer).to_be_hidden()
    await expect(page.get_by_label("Select every document on this page")).not_to_be_checked()
    await expect(page.get_by_role("heading", name="Documents")).to_be_focused()

    # The same for "Set metadata": confirmed 13, one more uploaded, nothing written.
    await page.get_by_label("Select every document on this page").check()
    await offer.get_by_role("button", name="Select all 13 matching").click()
    await expect(bar).to_contain_text("All 13 documents matching selected")
    await upload_and_wait(
        stack, {"m-14.txt": b"Match 14 is about plovers as well."}, file_metadata={"m-14.txt": TEAM}
    )
    await bar.get_by_role("button", name="Set metadata").click()
    edit = page.get_by_role("dialog", name=re.compile("Set metadata of all 13 documents matching"))
    await edit.get_by_label("Metadata (a JSON object)").fill('{"checked": true}')
    await edit.get_by_role("button", name="Set metadata").click()
    await expect(edit).to_be_hidden()
    await expect(page.locator(".toast-error").last).to_contain_text(
        "Set metadata failed: the selection now holds 14 documents, not the 13 confirmed"
    )
    assert await _matching(stack, {"checked": True}) == 0
    await expect(pager).to_contain_text("of 14")
    await expect(bar).to_be_hidden()

    # Confirmed with the right count, it acts.
    await page.get_by_label("Select every document on this page").check()
    await offer.get_by_role("button", name="Select all 14 matching").click()
    await bar.get_by_role("button", name="Delete selected").click()
    await page.get_by_role("dialog", name="Confirm").get_by_role("button", name="Delete").click()
    await expect(page.locator(".toast").last).to_have_text("Deleted 14 documents")
    assert await _matching(stack, TEAM) == 0
