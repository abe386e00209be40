"""A document's page for an editor: metadata shown and edited as JSON (checked before it is sent), and
the file replaced by a new version (same document, version 2, the new text in its chunks)."""

from __future__ import annotations

from playwright.async_api import Locator, Page, expect

from tests.browser.conftest import Stack
from tests.browser.seed import upload_and_wait

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
