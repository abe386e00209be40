"""How a tab knows its collection is gone, and follows it: by the API's `code` ("collection_not_found"),
never by the wording of the 404's sentence."""

from __future__ import annotations

import httpx
from playwright.async_api import Page, Route, expect

from tests.browser.conftest import Console, Stack
from tests.browser.seed import bearer, upload_and_wait


async def _admin(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60)


async def _search(page: Page, query: str) -> None:
    await page.get_by_label("Query").fill(query)
    await page.get_by_role("button", name="Search", exact=True).click()


async def test_a_collection_renamed_elsewhere_is_followed_by_the_errors_code_whatever_its_sentence(
    page: Page, stack: Stack, page_console: Console
) -> None:
    """The app matched the start of the English sentence ("no collection 'x'"): a server that words it
    otherwise (a translation, a rewording) left the tab on the old name, each view a 404."""
    page_console.allow("404")

    async def reworded(route: Route) -> None:
        response = await route.fetch()
        body = await response.json()
        if response.status == 404:
            body["detail"] = "Sammlung nicht gefunden"
        await route.fulfill(response=response, json=body)

    await page.route("**/search", reworded)
    async with await _admin(stack) as api:
        created = await api.post("/collections", json={"name": "moths"})
        assert created.status_code == 201, created.text
    await upload_and_wait(stack, {"luna.txt": b"Luna moths fly at night."}, "moths")
    await page.reload()
    await page.get_by_label("Collection").select_option("moths")
    await page.get_by_role("link", name="Search", exact=True).click()
    async with await _admin(stack) as api:
        renamed = await api.patch(f"/collections/{created.json()['id']}", json={"name": "lepidoptera"})
        assert renamed.status_code == 200, renamed.text
    await _search(page, "luna")
    switcher = page.get_by_label("Collection")
    await expect(switcher).to_have_value("lepidoptera")
    await expect(page.get_by_text("The collection “moths” is now called “lepidoptera”.")).to_be_visible()
    await _search(page, "luna")
    await expect(page.locator(".hit .hit-title a")).to_have_text(["luna.txt"])
    # A search still on its way when the tab closes would fail its route.fetch after the test.
    await page.unroute_all(behavior="ignoreErrors")


async def test_a_tab_reloaded_after_its_collection_was_renamed_elsewhere_follows_it(
    page: Page, stack: Stack
) -> None:
    """The tab keeps its collection's name: reloaded after a rename elsewhere, it found no collection of
    that name and showed `default`, without a word. It follows the collection by its id."""
    async with await _admin(stack) as api:
        created = await api.post("/collections", json={"name": "tides"})
        assert created.status_code == 201, created.text
    await upload_and_wait(stack, {"moon.txt": b"The moon pulls the tides twice a day."}, "tides")
    await page.reload()
    await page.get_by_label("Collection").select_option("tides")
    async with await _admin(stack) as api:
        renamed = await api.patch(f"/collections/{created.json()['id']}", json={"name": "currents"})
        assert renamed.status_code == 200, renamed.text
    await page.reload()
    await page.get_by_role("navigation", name="Main").wait_for()
    await expect(page.get_by_label("Collection")).to_have_value("currents")
    await expect(page.get_by_text("The collection “tides” is now called “currents”.")).to_be_visible()
    await page.get_by_role("link", name="Search", exact=True).click()
    await _search(page, "moon")
    await expect(page.locator(".hit .hit-title a")).to_have_text(["moon.txt"])


async def test_a_tab_reloaded_after_its_collection_was_deleted_elsewhere_says_so_once(
    page: Page, stack: Stack
) -> None:
    async with await _admin(stack) as api:
        assert (await api.post("/collections", json={"name": "ebb"})).status_code == 201
    await page.reload()
    await page.get_by_label("Collection").select_option("ebb")
    async with await _admin(stack) as api:
        assert (await api.delete("/collections/ebb")).status_code == 204
    await page.reload()
    await page.get_by_role("navigation", name="Main").wait_for()
    await expect(page.get_by_label("Collection")).to_have_value("default")
    gone = page.locator(".toast", has_text="no longer exists")
    await expect(gone).to_contain_text("The collection “ebb” no longer exists")
    await expect(gone).to_contain_text("showing “default”")
    # Once: the next reload is on `default`, and says nothing.
    await page.reload()
    await page.get_by_role("navigation", name="Main").wait_for()
    await page.wait_for_timeout(500)
    await expect(gone).to_have_count(0)
