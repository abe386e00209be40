"""Two people edit one document's metadata: one has its page open with the metadata editor, the other
saves first (another tab, the API, `rag-server documents update`). The editor replaces the metadata whole,
so saving what was typed over the older metadata threw the other edit away without a word. Seen by QA on
2026-12-07: {"team": "a"} set by a colleague was silently replaced by {"team": "b"}, typed over the
empty metadata the page had shown. The page now saves with `expected_metadata`: the server refuses (409)
a save over metadata changed since, in the same transaction as the write."""

from __future__ import annotations

import httpx
from playwright.async_api import Page, expect

from tests.browser.conftest import Console, Stack
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
