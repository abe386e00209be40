"""A document's page for an editor: metadata shown and edited as JSON (checked before it is sent), and
the file replaced by a new version (same document, version 2, the new text in its chunks)."""

from __future__ import annotations

import httpx
from playwright.async_api import Locator, Page, expect

from tests.browser.conftest import Stack
from tests.browser.seed import bearer, upload_and_wait, worker_paused

OLD = b"The heron waits by the river. " * 20
NEW = b"The kingfisher dives into the pond. " * 20


def fact(page: Page, label: str) -> Locator:
    return page.locator(f"dl.facts dt:text-is('{label}') + dd")


async def test_an_editor_edits_metadata_and_replaces_the_file(page: Page, stack: Stack) -> None:
    tasks = await upload_and_wait(stack, {"versions.txt": OLD})
    doc_id = tasks["versions.txt"]["document_id"]
    await page.goto(f"{stack.base_url}/#/documents/{doc_id}")
    await expect(page.get_by_role("heading", name="versions.txt")).to_be_visible()
    await expect(fact(page, "Version")).to_have_text("1")
    await expect(page.get_by_label("Current metadata", exact=True)).to_have_text("{}")

    await page.get_by_role("button", name="Edit metadata").click()
    editor = page.get_by_label("Metadata (a JSON object")
    await editor.fill("[1, 2]")
    await page.get_by_role("button", name="Save metadata").click()
    await expect(page.locator("#metadata-error")).to_have_text(
        'Metadata must be a JSON object, like {"team": "x"}.'
    )
    await editor.fill('{"team": "blue", "year": 2024}')
    await page.get_by_role("button", name="Save metadata").click()
    await expect(page.get_by_label("Current metadata", exact=True)).to_contain_text('"team": "blue"')

    await page.get_by_label("New version of the file").set_input_files(
        {"name": "versions.txt", "mimeType": "text/plain", "buffer": NEW}
    )
    await page.get_by_role("button", name="Replace file").click()
    await expect(fact(page, "Version")).to_have_text("2", timeout=60_000)
    await expect(fact(page, "Replaced")).to_be_visible()
    await expect(page.locator(".chunk-text").first).to_contain_text("kingfisher")
    await expect(page.get_by_label("Current metadata", exact=True)).to_contain_text('"team": "blue"')

    # The same bytes again: nothing to replace, and the page says so.
    await page.get_by_label("New version of the file").set_input_files(
        {"name": "versions.txt", "mimeType": "text/plain", "buffer": NEW}
    )
    await page.get_by_role("button", name="Replace file").click()
    await expect(page.locator("#replace-status")).to_contain_text("Identical to version 2")


async def test_the_keyboard_focus_stays_on_the_metadata_after_cancel_and_save(
    page: Page, stack: Stack
) -> None:
    """Cancel left the focus on the hidden Cancel button and Save on nothing (the page is rebuilt): the next
    Tab started over at the top of the page."""
    tasks = await upload_and_wait(stack, {"focus.txt": b"The focus document is about wrens. " * 5})
    await page.goto(f"{stack.base_url}/#/documents/{tasks['focus.txt']['document_id']}")
    edit = page.get_by_role("button", name="Edit metadata")
    await edit.focus()
    await page.keyboard.press("Enter")
    editor = page.get_by_label("Metadata (a JSON object")
    await expect(editor).to_be_focused()
    await page.get_by_role("button", name="Cancel").focus()
    await page.keyboard.press("Enter")
    await expect(edit).to_be_focused()

    await page.keyboard.press("Enter")
    await editor.fill('{"bird": "wren"}')
    await page.get_by_role("button", name="Save metadata").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_label("Current metadata", exact=True)).to_contain_text('"bird": "wren"')
    await expect(page.get_by_role("button", name="Edit metadata")).to_be_focused()


async def test_an_edit_keeps_an_integer_beyond_2_53_as_stored(page: Page, stack: Stack) -> None:
    """JavaScript's numbers round 9007199254740993 to ...992: the page showed the rounded id (set by the
    API or an import), and saving an edit of another key wrote it back rounded."""
    big = "9007199254740993"
    tasks = await upload_and_wait(
        stack, {"ids.txt": b"The order ledger lists ids. " * 5}, file_metadata={"ids.txt": {"team": "a"}}
    )
    doc_id = tasks["ids.txt"]["document_id"]
    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key)) as client:
        body = '{"metadata": {"order_id": ' + big + ', "team": "a"}}'
        patched = await client.patch(
            f"/documents/{doc_id}", content=body, headers={"content-type": "application/json"}
        )
        assert patched.status_code == 200, patched.text
        await page.goto(f"{stack.base_url}/#/documents/{doc_id}")
        await expect(page.get_by_label("Current metadata", exact=True)).to_contain_text(f'"order_id": {big}')
        await page.get_by_role("button", name="Edit metadata").click()
        editor = page.get_by_label("Metadata (a JSON object")
        await editor.fill((await editor.input_value()).replace('"team": "a"', '"team": "b"'))
        await page.get_by_role("button", name="Save metadata").click()
        await expect(page.get_by_label("Current metadata", exact=True)).to_contain_text('"team": "b"')
        stored = (await client.get(f"/documents/{doc_id}")).text
    assert f'"order_id":{big}' in stored.replace(" ", ""), stored
    # A number no double holds is refused, not saved as null.
    await page.get_by_role("button", name="Edit metadata").click()
    await editor.fill('{"n": 1e400}')
    await page.get_by_role("button", name="Save metadata").click()
    await expect(page.locator("#metadata-error")).to_contain_text("too large")


async def test_a_replacement_is_followed_through_a_redraw_of_the_page(page: Page, stack: Stack) -> None:
    """A find in the chunks while the new version was processed redrew the page: its progress line went,
    and the new version was never shown (the redraw stopped the request that followed it)."""
    tasks = await upload_and_wait(stack, {"colony.txt": OLD + b"The colony."})
    await page.goto(f"{stack.base_url}/#/documents/{tasks['colony.txt']['document_id']}")
    with worker_paused(stack):
        await page.get_by_label("New version of the file").set_input_files(
            {"name": "colony.txt", "mimeType": "text/plain", "buffer": NEW + b"The colony."}
        )
        await page.get_by_role("button", name="Replace file").click()
        await expect(page.locator("#replace-status")).to_contain_text("Processing version 2")
        await page.get_by_label("Find in chunks").fill("heron")  # the page is drawn again
        await expect(page.locator("#find-count")).to_be_visible()
        await expect(page.locator("#replace-status")).to_contain_text("Processing version 2")
    await expect(fact(page, "Version")).to_have_text("2", timeout=60_000)
    await expect(page.get_by_text("colony.txt: version 2 is in")).to_be_visible()


async def test_a_metadata_edit_survives_the_end_of_processing(page: Page, stack: Stack) -> None:
    """The page is drawn again when the document's processing ends: the edit being typed was lost."""
    with worker_paused(stack):
        async with httpx.AsyncClient(
            base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
        ) as client:
            sent = await client.post("/upload", files=[("files", ("edit-while.txt", OLD + b"Edited."))])
            assert sent.status_code == 202, sent.text
            doc_id = sent.json()["tasks"][0]["document_id"]
        await page.goto(f"{stack.base_url}/#/documents/{doc_id}")
        await expect(page.locator(".badge").first).to_have_text("queued")
        await page.get_by_role("button", name="Edit metadata").click()
        editor = page.get_by_label("Metadata (a JSON object")
        await editor.fill('{"typed": "while it processed"}')
    await expect(page.locator(".badge").first).to_have_text("ready", timeout=60_000)
    await expect(editor).to_be_visible()
    await expect(editor).to_have_value('{"typed": "while it processed"}')
