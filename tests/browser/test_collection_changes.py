"""Open tabs while the collections change under them (a team sharing one server): the collection a tab has
selected is deleted or renamed by an admin elsewhere (another tab, the CLI, the API), or a link opens a
document of a collection other than the one selected.

Seen by QA on 2026-12-07: after the delete or the rename, the tab stayed on the old name for good: the
switcher still offered it, and every view (Documents, Search, Chat) said only "no collection 'x'" until
the person reloaded the page or guessed to pick another collection. A link to a document of collection
`b` opened in a tab on `a` kept `a` selected: "Search in it" searched `a` for that document and said
"No results", and "All documents" listed `a`."""

from __future__ import annotations

import httpx
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import Console, Stack, new_page, sign_in
from tests.browser.seed import bearer, upload_and_wait


async def _admin(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60)


async def _select(page: Page, collection: str) -> None:
    await page.reload()
    await page.get_by_role("navigation", name="Main").wait_for()
    await page.get_by_label("Collection").select_option(collection)


async def _search(page: Page, query: str) -> None:
    await page.get_by_label("Query").fill(query)
    await page.get_by_role("button", name="Search", exact=True).click()


async def test_a_tab_on_a_collection_deleted_elsewhere_leaves_it_and_says_so(
    page: Page, stack: Stack, page_console: Console
) -> None:
    page_console.allow("404")  # the search of the deleted collection
    async with await _admin(stack) as api:
        for name in ("doomed", "spare"):
            assert (await api.post("/collections", json={"name": name})).status_code == 201
    await upload_and_wait(stack, {"doomed.txt": b"Comets trail long tails of ice and dust."}, "doomed")
    await upload_and_wait(stack, {"kept.txt": b"Comets also visit the default collection."})
    await _select(page, "doomed")
    await page.get_by_role("link", name="Search", exact=True).click()
    await _search(page, "comets")
    await expect(page.locator(".hit")).to_have_count(1)

    async with await _admin(stack) as api:
        response = await api.delete("/collections/doomed", params={"force": "true"})
        assert response.status_code == 204, response.text
    await _search(page, "comets tails")
    # The tab says what happened, leaves the deleted collection and offers it no more.
    await expect(page.get_by_text("The collection “doomed” no longer exists").first).to_be_visible()
    switcher = page.get_by_label("Collection")
    await expect(switcher).to_have_value("default")
    await expect(switcher.locator("option", has_text="doomed")).to_have_count(0)
    # The search button pressed is gone with the view shown again: the focus goes to the switcher, where
    # another collection is chosen, not to the page's body.
    await expect(switcher).to_be_focused()
    # The view shows the collection now selected, and works: no "no collection" left on the page.
    await expect(page.locator("#main")).not_to_contain_text("no collection")
    await _search(page, "comets")
    await expect(page.locator(".hit .hit-title a")).to_have_text(["kept.txt"])


async def test_a_tab_on_a_collection_renamed_elsewhere_follows_the_new_name(
    page: Page, stack: Stack, page_console: Console
) -> None:
    page_console.allow("404")  # the search under the old name
    async with await _admin(stack) as api:
        created = await api.post("/collections", json={"name": "drafts"})
        assert created.status_code == 201, created.text
    await upload_and_wait(stack, {"owls.txt": b"Owls hunt at night over the fields."}, "drafts")
    await _select(page, "drafts")
    await page.get_by_role("link", name="Search", exact=True).click()

    async with await _admin(stack) as api:
        renamed = await api.patch(f"/collections/{created.json()['id']}", json={"name": "published"})
        assert renamed.status_code == 200, renamed.text
    await _search(page, "owls")
    switcher = page.get_by_label("Collection")
    await expect(switcher).to_have_value("published")
    await expect(switcher.locator("option", has_text="drafts")).to_have_count(0)
    await _search(page, "owls")
    await expect(page.locator(".hit .hit-title a")).to_have_text(["owls.txt"])


async def test_a_link_to_a_document_of_another_collection_selects_its_collection(
    page: Page, stack: Stack
) -> None:
    async with await _admin(stack) as api:
        assert (await api.post("/collections", json={"name": "linked"})).status_code == 201
    tasks = await upload_and_wait(stack, {"badgers.txt": b"Badgers dig setts under old hedgerows."}, "linked")
    await _select(page, "default")
    # A teammate's link to the document, opened in this tab (on `default`).
    await page.goto(f"{stack.base_url}/#/documents/{tasks['badgers.txt']['document_id']}")
    await expect(page.get_by_role("heading", name="badgers.txt")).to_be_visible()
    await expect(page.get_by_label("Collection")).to_have_value("linked")
    await page.get_by_role("link", name="Search in it").click()
    await _search(page, "badgers")
    await expect(page.locator(".hit .hit-title a")).to_have_text(["badgers.txt"])
    await page.get_by_role("link", name="Documents", exact=True).click()
    await expect(page.get_by_role("link", name="badgers.txt")).to_be_visible()


async def test_a_key_whose_every_collection_is_deleted_is_told_once(
    browser: Browser, stack: Stack, page_console: Console
) -> None:
    """The fallback after a deleted collection must not itself be a collection that is gone: a key
    limited to one collection, deleted, left nothing to fall back on, and each view shown again asked
    again, for ever."""
    page_console.allow("404")
    async with await _admin(stack) as api:
        assert (await api.post("/collections", json={"name": "lonely"})).status_code == 201
        made = await api.post(
            "/keys", json={"name": "lonely-reader", "role": "reader", "collections": ["lonely"]}
        )
        assert made.status_code == 201, made.text
    page = await new_page(browser, page_console)
    await sign_in(page, stack.base_url, made.json()["key"])
    await expect(page.get_by_label("Collection")).to_have_value("lonely")
    await page.get_by_role("link", name="Search", exact=True).click()
    async with await _admin(stack) as api:
        assert (await api.delete("/collections/lonely")).status_code == 204
    await _search(page, "anything")
    gone = page.locator(".toast", has_text="no longer exists")
    await expect(gone).to_contain_text("The collection “lonely” no longer exists")
    await expect(gone).to_contain_text("this key reaches no other collection")
    await page.wait_for_timeout(3000)  # a loop shows the view again and again, each time with a toast
    await expect(gone).to_have_count(1)
    await page.context.close()


async def test_signing_in_with_a_key_whose_every_collection_was_deleted_says_so_in_each_view(
    browser: Browser, stack: Stack, page_console: Console
) -> None:
    """Signed in (or reloaded) with a key whose collections were all deleted before: the switcher was
    empty, yet Chat said "Answers come from the 'default' collection" and Documents "no collection
    'default'" (a collection it cannot read, asked for). Seen by QA on 2026-12-07."""
    async with await _admin(stack) as api:
        assert (await api.post("/collections", json={"name": "gone"})).status_code == 201
        made = await api.post(
            "/keys", json={"name": "nothing-left", "role": "editor", "collections": ["gone"]}
        )
        assert made.status_code == 201, made.text
        assert (await api.delete("/collections/gone", params={"force": "true"})).status_code == 204
    page = await new_page(browser, page_console)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    await sign_in(page, stack.base_url, made.json()["key"])
    main = page.locator("#main")
    for reload in (False, True):
        if reload:
            await page.reload()
            await page.get_by_role("navigation", name="Main").wait_for()
        for view in ("Chat", "Search", "Documents"):
            await page.get_by_role("link", name=view, exact=True).click()
            await expect(page.get_by_role("heading", name="No collection")).to_be_visible()
            await expect(main).to_contain_text("This API key can reach no collection")
            await expect(main).to_contain_text("Ask an admin")
            await expect(main).not_to_contain_text("default")
    await expect(page.locator(".toast")).to_have_count(0)
    assert not [u for u in asked if "default" in u], asked
    assert not page_console.unexpected(), page_console.unexpected()
    await page.context.close()


async def test_a_chat_going_on_when_its_collection_is_renamed_elsewhere_stays_open(
    page: Page, stack: Stack, page_console: Console
) -> None:
    """A follow-up sent after the collection was renamed elsewhere is a 404 "no collection 'x'", which the
    chat took for its own session deleted: it closed the conversation (a "New chat" under the new name,
    the session gone from the URL) although the session was never deleted. Seen by QA on 2026-12-07."""
    page_console.allow("404")  # the question sent under the old name
    async with await _admin(stack) as api:
        created = await api.post("/collections", json={"name": "atlas"})
        assert created.status_code == 201, created.text
    await upload_and_wait(stack, {"rivers.txt": b"The Danube flows through ten countries."}, "atlas")
    await _select(page, "atlas")
    box = page.get_by_label("Message", exact=True)
    await box.fill("Which river flows through ten countries?")
    await box.press("Enter")
    first = page.locator(".thread .msg-assistant").first
    await expect(first.get_by_role("button", name="Copy answer")).to_be_visible(timeout=60_000)
    session_url = page.url
    assert "#/chat/" in session_url

    async with await _admin(stack) as api:
        renamed = await api.patch(f"/collections/{created.json()['id']}", json={"name": "globe"})
        assert renamed.status_code == 200, renamed.text
    await box.fill("And the Rhine?")
    await box.press("Enter")
    await expect(page.get_by_label("Collection")).to_have_value("globe")
    # The conversation is still the one shown: its session was never deleted.
    await expect(page.locator(".thread")).to_contain_text("Which river flows through ten countries?")
    assert page.url == session_url
    await expect(page.locator("#chat-title")).not_to_have_text("New chat")
    await expect(page.locator("#main")).not_to_contain_text("This chat no longer exists")
    # The follow-up, not answered, is back in the box, to be sent again in this chat.
    await expect(page.get_by_label("Message", exact=True)).to_have_value("And the Rhine?")


async def test_a_link_to_a_document_of_a_collection_made_after_the_tab_opened_selects_it(
    page: Page, stack: Stack
) -> None:
    """A teammate makes a collection, uploads to it and sends a link to the document, to a tab open since
    before: its list of collections lacked the new one, so the page said "Collection 3f0c...-..." (an id),
    kept `default` selected, and "Search in it" searched `default` and said "No results. Try other
    words". QA, 2026-12-07."""
    await page.reload()  # the tab's list of collections: those there are now
    await page.get_by_role("navigation", name="Main").wait_for()
    async with await _admin(stack) as api:
        assert (await api.post("/collections", json={"name": "latecomer"})).status_code == 201
    tasks = await upload_and_wait(
        stack, {"hedgehogs.txt": b"Hedgehogs sleep through the winter."}, "latecomer"
    )
    # The link opened in this tab (no reload: the app's collections are those it loaded at sign-in).
    await page.evaluate(f"location.hash = '#/documents/{tasks['hedgehogs.txt']['document_id']}'")
    await expect(page.get_by_role("heading", name="hedgehogs.txt")).to_be_visible()
    await expect(page.locator(".facts")).to_contain_text("latecomer")
    await expect(page.get_by_label("Collection")).to_have_value("latecomer")
    await page.get_by_role("link", name="Search in it").click()
    await _search(page, "hedgehogs")
    await expect(page.locator(".hit .hit-title a")).to_have_text(["hedgehogs.txt"])


async def test_a_dialog_open_when_its_collection_is_renamed_elsewhere_goes_with_its_view(
    page: Page, stack: Stack, page_console: Console
) -> None:
    """ "Set metadata" of selected documents, open while the collection is renamed elsewhere: the tab
    follows the new name and shows the view again, without the selection, and no dialog stays open over
    it. It stayed, modal (the focus on the body), and each "Set metadata" was sent to the old name again:
    a 404, for as long as one tried (QA, 2026-12-07). The save now names the collection by id and is done
    (test_documents_collection_renamed.py); the list's refresh under the old name is the 404 followed."""
    page_console.allow("404")
    async with await _admin(stack) as api:
        created = await api.post("/collections", json={"name": "flocks"})
        assert created.status_code == 201, created.text
    await upload_and_wait(stack, {"finch.txt": b"Finches flock in winter."}, "flocks")
    await _select(page, "flocks")
    await page.get_by_role("link", name="Documents", exact=True).click()
    await page.get_by_label("Select finch.txt").check()
    await page.locator(".bulk-bar").get_by_role("button", name="Set metadata").click()
    dialog = page.get_by_role("dialog", name="Set metadata of 1 document")
    await dialog.get_by_label("Metadata (a JSON object)").fill('{"season": "winter"}')
    async with await _admin(stack) as api:
        renamed = await api.patch(f"/collections/{created.json()['id']}", json={"name": "herds"})
        assert renamed.status_code == 200, renamed.text
    await dialog.get_by_role("button", name="Set metadata").click()
    switcher = page.locator("select#collection")  # the dialog's name says "in the collection flocks" too
    await expect(switcher).to_have_value("herds")
    await expect(page.locator("dialog[open]")).to_have_count(0)
    await expect(switcher).to_be_focused()
