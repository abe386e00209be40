"""The "No collection" card of a key that reaches no collection goes once an admin gives it one, without a
reload: it stayed until the person reloaded the page (QA, 2026-12-07). The tab asks for the key's
collections again when it is shown or focused, and every 15 s while it is visible. The admin gives it one
as an admin does, through PATCH /keys/{name}."""

from __future__ import annotations

import httpx
from playwright.async_api import Browser, expect

from tests.browser.conftest import Console, Stack, new_page, sign_in
from tests.browser.seed import bearer, upload_and_wait


async def grant(stack: Stack, key_name: str, collection: str) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60) as api:
        r = await api.patch(f"/keys/{key_name}", json={"collections": [collection]})
        assert r.status_code == 200, r.text


async def test_the_no_collection_card_goes_once_the_key_is_given_a_collection(
    browser: Browser, stack: Stack, page_console: Console
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60) as api:
        assert (await api.post("/collections", json={"name": "emptied"})).status_code == 201
        made = await api.post("/keys", json={"name": "waiting", "role": "reader", "collections": ["emptied"]})
        assert made.status_code == 201, made.text
        assert (await api.delete("/collections/emptied")).status_code == 204
        assert (await api.post("/collections", json={"name": "granted"})).status_code == 201
    await upload_and_wait(stack, {"given.txt": b"A collection given to a waiting key."}, "granted")

    page = await new_page(browser, page_console)
    await sign_in(page, stack.base_url, made.json()["key"])
    await page.get_by_role("link", name="Documents", exact=True).click()
    await expect(page.get_by_role("heading", name="No collection")).to_be_visible()

    await grant(stack, "waiting", "granted")
    # The person comes back to the tab (from the admin's message, say): the page follows.
    await page.evaluate("window.dispatchEvent(new Event('focus'))")
    await expect(page.get_by_role("link", name="given.txt")).to_be_visible()
    await expect(page.get_by_role("heading", name="No collection")).to_have_count(0)
    await expect(page.get_by_label("Collection")).to_have_value("granted")
    await expect(page.locator(".toast")).to_have_count(0)
    # The other views of a collection are back too.
    await page.get_by_role("link", name="Search", exact=True).click()
    await expect(page.get_by_label("Query")).to_be_visible()
    await page.context.close()
    assert not page_console.unexpected(), page_console.unexpected()


async def test_the_no_collection_card_asks_again_by_itself_while_it_is_shown(
    browser: Browser, stack: Stack, page_console: Console
) -> None:
    """No focus, no visibility change: the tab left open on the card finds the collection given meanwhile;
    another view shown, it asks nothing."""
    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60) as api:
        assert (await api.post("/collections", json={"name": "later"})).status_code == 201
        made = await api.post("/keys", json={"name": "patient", "role": "reader", "collections": ["later"]})
        assert made.status_code == 201, made.text
        assert (await api.delete("/collections/later")).status_code == 204
        assert (await api.post("/collections", json={"name": "finally"})).status_code == 201
    page = await new_page(browser, page_console)
    await page.clock.install()  # the tab's timers run when this test moves its clock on
    await sign_in(page, stack.base_url, made.json()["key"])
    # Not shown, the card asks nothing.
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/collections" in r.url else None)
    await page.get_by_role("link", name="Status", exact=True).click()
    await page.get_by_text("BM25 engine").wait_for()
    await page.clock.run_for(46_000)
    assert asked == []
    await page.get_by_role("link", name="Chat", exact=True).click()
    await expect(page.get_by_role("heading", name="No collection")).to_be_visible()
    await grant(stack, "patient", "finally")
    await page.clock.run_for(16_000)  # past the card's next check (every 15 s)
    await expect(page.get_by_label("Message", exact=True)).to_be_visible()
    await expect(page.get_by_label("Collection")).to_have_value("finally")
    await page.context.close()
    assert not page_console.unexpected(), page_console.unexpected()
