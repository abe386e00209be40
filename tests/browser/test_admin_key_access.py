"""Admin -> Keys, "Edit access": an admin changes an existing key's collections and role in a dialog (the
key itself stays the same, and works with its new access at once); what the server refuses stays in the
dialog, in the server's words."""

from __future__ import annotations

import httpx
from playwright.async_api import Page, expect

from tests.browser.conftest import Console, Stack
from tests.browser.seed import bearer


async def _open_admin(page: Page) -> None:
    await page.reload()
    await page.get_by_role("navigation", name="Main").wait_for()
    await page.get_by_role("link", name="Admin", exact=True).click()
    await expect(page.locator('.admin-table tr[data-name="default"]').first).to_be_visible()


async def test_an_admin_gives_a_key_another_collection_in_the_dialog(
    page: Page, stack: Stack, page_console: Console
) -> None:
    page_console.allow("422")  # the refusal the dialog shows
    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60) as api:
        for name in ("ka-one", "ka-two"):
            assert (await api.post("/collections", json={"name": name})).status_code == 201
        made = await api.post(
            "/keys", json={"name": "ka-reader", "role": "reader", "collections": ["ka-one"]}
        )
        assert made.status_code == 201, made.text
    key = made.json()["key"]
    await _open_admin(page)
    row = page.locator('tr[data-name="ka-reader"]')
    await expect(row.locator("td").nth(2)).to_have_text("ka-one")

    await row.get_by_role("button", name="Edit access of ka-reader").click()
    dialog = page.get_by_role("dialog", name="Access of ka-reader")
    await expect(dialog.get_by_label("ka-one", exact=True)).to_be_checked()
    await expect(dialog.get_by_label("ka-two", exact=True)).not_to_be_checked()
    # Every box cleared: the server refuses a limited key with no collection, and the dialog says why.
    await dialog.get_by_label("ka-one", exact=True).uncheck()
    await dialog.get_by_role("button", name="Save").click()
    await expect(dialog.get_by_role("alert")).to_contain_text("collections")
    await expect(dialog).to_be_visible()
    # An admin key reaches every collection: its boxes are not offered.
    await dialog.get_by_label("Role").select_option("admin")
    await expect(dialog.get_by_label("ka-two", exact=True)).to_be_disabled()
    await dialog.get_by_label("Role").select_option("editor")
    await dialog.get_by_label("ka-one", exact=True).check()
    await dialog.get_by_label("ka-two", exact=True).check()
    await dialog.get_by_role("button", name="Save").click()
    await expect(dialog).to_be_hidden()
    await expect(row.locator("td").nth(1)).to_have_text("editor")
    await expect(row.locator("td").nth(2)).to_have_text("ka-one, ka-two")
    await expect(row.get_by_role("button", name="Edit access of ka-reader")).to_be_focused()
    # Widened to every collection, new ones too (`"collections": null`): its list is gone.
    await row.get_by_role("button", name="Edit access of ka-reader").click()
    await expect(dialog.get_by_label("Every collection, new ones too")).not_to_be_checked()
    await dialog.get_by_label("Every collection, new ones too").check()
    await expect(dialog.get_by_label("ka-one", exact=True)).to_be_disabled()
    await dialog.get_by_role("button", name="Save").click()
    await expect(dialog).to_be_hidden()
    await expect(row.locator("td").nth(2)).to_have_text("every collection")

    # The same key, its next request: ka-two's documents listed, and it may upload there now.
    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(key), timeout=60) as as_key:
        assert (await as_key.get("/documents", params={"collection": "ka-two"})).status_code == 200
        files = {"files": ("ka.txt", b"a note for ka-two", "text/plain")}
        uploaded = await as_key.post("/upload", files=files, data={"collection": "ka-two"})
        assert uploaded.status_code == 202, uploaded.text


async def test_demoting_the_last_admin_key_is_refused_in_the_dialog(
    page: Page, stack: Stack, page_console: Console
) -> None:
    page_console.allow("409")
    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60) as api:
        admins = [
            k for k in (await api.get("/keys", params={"limit": 500})).json()["items"] if k["role"] == "admin"
        ]
    assert len(admins) == 1, admins  # this tab's: the last one
    name = admins[0]["name"]
    await _open_admin(page)
    row = page.locator(f'tr[data-name="{name}"]')
    await row.get_by_role("button", name=f"Edit access of {name}").click()
    dialog = page.get_by_role("dialog", name=f"Access of {name}")
    await expect(dialog).to_contain_text("this tab is signed in with")
    await dialog.get_by_label("Role").select_option("reader")
    await expect(dialog.get_by_label("default", exact=True)).to_be_disabled()  # every collection, ticked
    await dialog.get_by_label("Every collection, new ones too").uncheck()
    await dialog.get_by_label("default", exact=True).check()
    await dialog.get_by_role("button", name="Save").click()
    await expect(dialog.get_by_role("alert")).to_contain_text("last active admin key")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(row.locator("td").nth(1)).to_have_text("admin")
