"""A key revoked while its user has a dialog open (Set metadata of selected documents, an Admin edit): the
next request is a 401 and the app shows its sign-in form. Seen by QA on 2026-12-07: the dialog stayed
open over that form, modal, so the form behind it was inert: the key field could not take the focus
(it fell on the page's body) nor be clicked until the person found out to close the dialog, which still
said "the API key is not valid"."""

from __future__ import annotations

import httpx
from playwright.async_api import Browser, expect

from tests.browser.conftest import Console, Stack, new_page, sign_in
from tests.browser.seed import bearer, create_key, upload_and_wait


async def test_a_dialog_open_when_the_key_is_revoked_gives_way_to_the_sign_in_form(
    browser: Browser, stack: Stack, page_console: Console
) -> None:
    page_console.allow("401")  # the request of the revoked key
    await upload_and_wait(stack, {"memo.txt": b"A memo about the quarterly budget."})
    key = await create_key(stack, "leaving-editor", "editor")
    page = await new_page(browser, page_console)
    await sign_in(page, stack.base_url, key)
    await page.get_by_role("link", name="Documents", exact=True).click()
    await page.get_by_label("Select memo.txt").check()
    await page.get_by_role("button", name="Set metadata").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()

    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key)) as api:
        assert (await api.delete("/keys/leaving-editor")).status_code == 200
    await dialog.get_by_role("textbox").first.fill('{"team": "a"}')
    await dialog.get_by_role("button", name="Set metadata").click()

    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator("dialog[open]")).to_have_count(0)
    await expect(page.get_by_label("API key")).to_be_focused()
    await page.context.close()
    assert not page_console.unexpected(), page_console.unexpected()
