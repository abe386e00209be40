"""Two people edit one document's metadata: one has its page open with the metadata editor, the other
saves first (another tab, the API, `rag-server documents update`). The editor replaces the metadata whole,
so saving what was typed over the older metadata threw the other edit away without a word. Seen by QA on
2026-12-07: {"team": "a"} set by a colleague was silently replaced by {"team": "b"}, typed over the
empty metadata the page had shown. The page now saves with `expected_metadata`: the server refuses (409)
a save over metadata changed since, in the same transaction as the write."""

from __future__ import annotations

import httpx
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import Console, Stack, new_page, sign_in
from tests.browser.seed import bearer, upload_and_wait


async def test_saving_metadata_someone_changed_meanwhile_says_so_before_replacing_it(
    page: Page, stack: Stack, page_console: Console
) -> None:
    page_console.allow("409")  # the server refuses the save made over the older metadata
    tasks = await upload_and_wait(stack, {"shared.txt": b"A document two people describe at once."})
    document_id = tasks["shared.txt"]["document_id"]
    await page.goto(f"{stack.base_url}/#/documents/{document_id}")
    await page.get_by_role("button", name="Edit metadata").click()
    await page.get_by_label("Metadata (a JSON object").fill('{"team": "b"}')

    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key)) as api:
        changed = await api.patch(f"/documents/{document_id}", json={"metadata": {"team": "a", "year": 2026}})
        assert changed.status_code == 200, changed.text
        await page.get_by_role("button", name="Save metadata").click()
        alert = page.locator("#metadata-error")
        await expect(alert).to_contain_text("changed since you opened the editor")
        await expect(alert).to_contain_text('"year": 2026')
        assert (await api.get(f"/documents/{document_id}")).json()["metadata"] == {"team": "a", "year": 2026}
        # What was typed is kept; saving it again, knowingly, replaces the other edit.
        await expect(page.get_by_label("Metadata (a JSON object")).to_have_value('{"team": "b"}')
        await page.get_by_role("button", name="Save metadata").click()
        await expect(page.get_by_role("button", name="Edit metadata")).to_be_focused()
        assert (await api.get(f"/documents/{document_id}")).json()["metadata"] == {"team": "b"}


async def test_on_a_phone_with_the_keyboard_the_changed_metadata_is_read_and_saved_again(
    browser: Browser, stack: Stack, page_console: Console
) -> None:
    """QA, 2026-12-07, 375 px, dark, keyboard only. The Save button is disabled while the save is sent,
    and a disabled button loses the focus: after the 409 it was on the page's body, so Enter, pressed to
    "Save again" as the message says, did nothing. And the message quotes the stored metadata: a URL in
    it (a `source`, common in metadata) is one unbreakable word, which widened the message past the
    phone's screen (cut off on the right, the whole section scrolled sideways)."""
    page_console.allow("409")
    tasks = await upload_and_wait(
        stack, {"phone.txt": b"A document edited on a phone while a colleague edits it."}
    )
    document_id = tasks["phone.txt"]["document_id"]
    phone = await new_page(browser, page_console, viewport={"width": 375, "height": 740}, color_scheme="dark")
    await sign_in(phone, stack.base_url, stack.admin_key)
    await phone.goto(f"{stack.base_url}/#/documents/{document_id}")
    await phone.get_by_role("button", name="Edit metadata").focus()
    await phone.keyboard.press("Enter")
    area = phone.get_by_label("Metadata (a JSON object")
    await expect(area).to_be_focused()
    await phone.keyboard.press("Control+A")
    await phone.keyboard.type('{"team": "mine"}')
    theirs = {"team": "theirs", "source": "https://intranet.example.com/handbooks/2026/berlin-office"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key)) as api:
        changed = await api.patch(f"/documents/{document_id}", json={"metadata": theirs})
        assert changed.status_code == 200, changed.text
        await phone.keyboard.press("Tab")
        save = phone.get_by_role("button", name="Save metadata")
        await expect(save).to_be_focused()
        await phone.keyboard.press("Enter")
        alert = phone.locator("#metadata-error")
        await expect(alert).to_contain_text("changed since you opened the editor")
        # The message fits the screen.
        box = await alert.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, box
        assert await alert.evaluate("el => el.scrollWidth <= el.clientWidth")
        # The focus is still on Save: Enter saves again, knowingly.
        await expect(save).to_be_focused()
        await phone.keyboard.press("Enter")
        await expect(phone.get_by_role("button", name="Edit metadata")).to_be_focused()
        assert (await api.get(f"/documents/{document_id}")).json()["metadata"] == {"team": "mine"}
    await phone.context.close()


async def test_saving_again_after_the_409_does_not_throw_away_a_third_edit_made_meanwhile(
    page: Page, stack: Stack, page_console: Console
) -> None:
    """After the 409 the page shows the metadata now stored and says "Save again to replace it with
    yours": the second Save is meant to replace *that*, knowingly. It was sent with no expected metadata at
    all, so an edit made between the message and the second Save was thrown away without a word, the very
    loss the first check prevents. QA, 2026-12-07."""
    page_console.allow("409")
    tasks = await upload_and_wait(stack, {"thrice.txt": b"A document three people describe at once."})
    document_id = tasks["thrice.txt"]["document_id"]
    await page.goto(f"{stack.base_url}/#/documents/{document_id}")
    await page.get_by_role("button", name="Edit metadata").click()
    await page.get_by_label("Metadata (a JSON object").fill('{"team": "b"}')
    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key)) as api:
        second = await api.patch(f"/documents/{document_id}", json={"metadata": {"team": "a"}})
        assert second.status_code == 200, second.text
        await page.get_by_role("button", name="Save metadata").click()
        alert = page.locator("#metadata-error")
        await expect(alert).to_contain_text('"team": "a"')
        # A third person saves while this one reads the message.
        third = await api.patch(f"/documents/{document_id}", json={"metadata": {"team": "c", "year": 2027}})
        assert third.status_code == 200, third.text
        await page.get_by_role("button", name="Save metadata").click()
        # Told again, with what is stored now; nothing was written.
        await expect(alert).to_contain_text('"year": 2027')
        assert (await api.get(f"/documents/{document_id}")).json()["metadata"] == {"team": "c", "year": 2027}
        await page.get_by_role("button", name="Save metadata").click()
        await expect(page.get_by_role("button", name="Edit metadata")).to_be_focused()
        assert (await api.get(f"/documents/{document_id}")).json()["metadata"] == {"team": "b"}
