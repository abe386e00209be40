"""The Admin view's lists as a keyboard user and a team of admins meet them: where the focus goes when a
row goes (Delete, Revoke), and the new key's collection choices while other admins change collections."""

from __future__ import annotations

import asyncio

import httpx
from playwright.async_api import Browser, Locator, Page, Response, Route, expect

from tests.browser.conftest import Console, Stack, new_page, sign_in
from tests.browser.seed import bearer, create_key, upload_and_wait, worker_paused


async def _admin(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60)


async def _open_admin(page: Page) -> None:
    await page.reload()
    await page.get_by_role("navigation", name="Main").wait_for()
    await page.get_by_role("link", name="Admin", exact=True).click()
    await expect(page.locator('.admin-table tr[data-name="default"]').first).to_be_visible()


async def _reader_key_form_for(page: Page, stack: Stack, key: str, collection: str) -> Locator:
    """`collection` made, Admin opened, and the new-key form filled for a reader `key` of it, not sent."""
    async with await _admin(stack) as api:
        assert (await api.post("/collections", json={"name": collection})).status_code == 201
    await _open_admin(page)
    form = page.get_by_role("form", name="New API key")
    await form.get_by_label("Name").fill(key)
    await form.get_by_label("Role").select_option("reader")
    await form.get_by_label("Every collection, new ones too").uncheck()
    await form.get_by_label(collection, exact=True).check()
    return form


async def _confirm(page: Page, action: str) -> None:
    await page.get_by_role("dialog", name="Confirm").get_by_role("button", name=action).click()


async def test_the_focus_after_a_delete_or_a_revoke_goes_to_the_next_rows_action(
    page: Page, stack: Stack
) -> None:
    """The focus fell on the page's body with the removed row's button: a keyboard user started again
    from the top of the page. It goes to the same action on the next row, else on the row before."""
    async with await _admin(stack) as api:
        for name in ("zf-a", "zf-b", "zf-c"):
            assert (await api.post("/collections", json={"name": name})).status_code == 201
    for name in ("zk-a", "zk-b", "zk-c"):
        await create_key(stack, name, "reader")
    await _open_admin(page)

    await page.get_by_role("button", name="Delete zf-b").click()
    await _confirm(page, "Delete")
    await expect(page.locator('tr[data-name="zf-b"]')).to_have_count(0)
    await expect(page.get_by_role("button", name="Delete zf-c")).to_be_focused()
    await page.keyboard.press("Enter")  # the last row: the focus goes to the row before
    await _confirm(page, "Delete")
    await expect(page.locator('tr[data-name="zf-c"]')).to_have_count(0)
    await expect(page.get_by_role("button", name="Delete zf-a")).to_be_focused()

    await page.get_by_role("button", name="Revoke zk-b").click()
    await _confirm(page, "Revoke")
    await expect(page.locator('tr[data-name="zk-b"]')).to_have_count(0)
    await expect(page.get_by_role("button", name="Revoke zk-c")).to_be_focused()
    await page.keyboard.press("Enter")
    await _confirm(page, "Revoke")
    await expect(page.locator('tr[data-name="zk-c"]')).to_have_count(0)
    await expect(page.get_by_role("button", name="Revoke zk-a")).to_be_focused()
    # Revoked keys shown, the revoked row stays (a badge, no button): the focus goes on past it.
    await page.get_by_label("Show revoked keys").check()
    await expect(page.locator('tr[data-name="zk-b"] .badge')).to_have_text("revoked")
    await page.get_by_role("button", name="Revoke zk-a").click()
    await _confirm(page, "Revoke")
    await expect(page.locator('tr[data-name="zk-a"] .badge')).to_have_text("revoked")
    await expect(page.get_by_role("button", name="Revoke bootstrap-admin")).to_be_focused()
    assert await page.evaluate("document.activeElement !== document.body")


async def test_the_new_keys_collections_follow_what_other_admins_did_meanwhile(
    page: Page, stack: Stack
) -> None:
    """The form's collection checkboxes were those of the page's load: a collection another admin deleted
    stayed offered (a key made with it: a 404), one renamed kept its old name, one created was missing
    until a reload. Entering the form fetches them again; a tick follows its collection renamed."""
    async with await _admin(stack) as api:
        for name in ("kc-old", "kc-gone"):
            assert (await api.post("/collections", json={"name": name})).status_code == 201
    await _open_admin(page)
    form = page.get_by_role("form", name="New API key")
    await form.get_by_label("Role").select_option("reader")
    await form.get_by_label("Every collection, new ones too").uncheck()
    await form.get_by_label("kc-old", exact=True).check()
    await page.get_by_role("heading", name="API keys").click()  # the focus leaves the form

    async with await _admin(stack) as api:
        assert (await api.patch("/collections/kc-old", json={"name": "kc-new"})).status_code == 200
        assert (await api.delete("/collections/kc-gone")).status_code == 204
        assert (await api.post("/collections", json={"name": "kc-fresh"})).status_code == 201
    await form.get_by_label("Name").fill("kc-reader")
    await expect(form.get_by_label("kc-gone", exact=True)).to_have_count(0)
    await expect(form.get_by_label("kc-old", exact=True)).to_have_count(0)
    await expect(form.get_by_label("kc-fresh", exact=True)).not_to_be_checked()
    await expect(form.get_by_label("kc-new", exact=True)).to_be_checked()
    await expect(form.get_by_label("Name")).to_be_focused()  # the refresh took no focus away
    await form.get_by_role("button", name="Create key").click()
    await expect(page.locator('tr[data-name="kc-reader"] td').nth(2)).to_have_text("kc-new")


async def test_a_collection_deleted_while_the_key_form_is_in_use_goes_from_it(
    page: Page, stack: Stack, page_console: Console
) -> None:
    """Deleted by another admin while this one is in the form: creating the key is refused (404) and the
    form, and the list of collections above it, offer it no more, without a reload."""
    page_console.allow("404")  # the key asked for with the deleted collection
    form = await _reader_key_form_for(page, stack, "kd-reader", "kd-doomed")
    async with await _admin(stack) as api:
        assert (await api.delete("/collections/kd-doomed")).status_code == 204
    await form.get_by_role("button", name="Create key").click()
    await expect(page.get_by_role("alert").filter(has_text="kd-doomed")).to_be_visible()
    await expect(form.get_by_label("kd-doomed", exact=True)).to_have_count(0)
    await expect(page.locator('tr[data-name="kd-doomed"]')).to_have_count(0)


async def test_a_collection_renamed_while_the_key_form_is_in_use_is_the_keys_under_its_new_name(
    page: Page, stack: Stack
) -> None:
    """Ticked, then renamed by another admin while the focus stays in the form (no refetch): the form sent
    the tick's old name, so creating the key was refused, "no collection 'kr-old'". A tick is its
    collection's, by id: the key is made for the collection, whatever it is called now."""
    form = await _reader_key_form_for(page, stack, "kr-reader", "kr-old")
    async with await _admin(stack) as api:
        assert (await api.patch("/collections/kr-old", json={"name": "kr-new"})).status_code == 200
    await form.get_by_role("button", name="Create key").click()
    await expect(page.locator('tr[data-name="kr-reader"] td').nth(2)).to_have_text("kr-new")


def _collections_fetched(response: Response) -> bool:
    return response.request.method == "GET" and "/collections" in response.url


async def test_a_tick_given_as_the_key_form_is_entered_keeps_its_focus_while_the_choices_follow(
    page: Page, stack: Stack
) -> None:
    """Entering the form fetches the collections again, and one deleted meanwhile goes. Two ways that lost
    the tick that entered it: the box after the deleted one was moved up in the DOM, which took its focus
    away (to the page's body); and, the list answered between the press and the release, the box moved from
    under the pointer, so the release was no click on it (CI saw "clicking the checkbox did not change its
    state"). The press here is held until the list has been answered."""
    async with await _admin(stack) as api:
        for name in ("kt-a", "kt-b", "kt-c"):
            assert (await api.post("/collections", json={"name": name})).status_code == 201
    await _open_admin(page)
    form = page.get_by_role("form", name="New API key")
    await form.get_by_label("Role").select_option("reader")
    await form.get_by_label("Every collection, new ones too").uncheck()
    await page.get_by_role("heading", name="API keys").click()  # the focus leaves the form
    async with await _admin(stack) as api:
        assert (await api.delete("/collections/kt-b")).status_code == 204
    await form.get_by_label("kt-c", exact=True).scroll_into_view_if_needed()
    box = await form.get_by_label("kt-c", exact=True).bounding_box()
    assert box
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    # Counted after the app's own listeners: the choices have been offered the answer when it counts it.
    await page.evaluate(
        "() => { window.collectionsLoaded = 0;"
        " window.addEventListener('rag:collections', () => window.collectionsLoaded++); }"
    )
    async with page.expect_response(_collections_fetched):
        await page.mouse.down()  # enters the form: the choices are fetched
    await page.wait_for_function("() => window.collectionsLoaded > 0")
    await page.mouse.up()
    await expect(form.get_by_label("kt-b", exact=True)).to_have_count(0)
    await expect(form.get_by_label("kt-c", exact=True)).to_be_checked()
    await expect(form.get_by_label("kt-c", exact=True)).to_be_focused()


async def test_a_new_key_reaches_every_collection_only_as_ticked_and_no_choice_is_refused(
    page: Page, stack: Stack
) -> None:
    """The form said "None ticked: every collection": a key meant for one collection, its box forgotten,
    was made for all of them, new ones too. That is now a box of its own, ticked at first (as "Edit
    access" shows it); unticked with no collection chosen, nothing is made and the form says why."""
    async with await _admin(stack) as api:
        assert (await api.post("/collections", json={"name": "ke-one"})).status_code == 201
    await _open_admin(page)
    form = page.get_by_role("form", name="New API key")
    await form.get_by_label("Name").fill("ke-none")
    await form.get_by_label("Role").select_option("reader")
    await form.get_by_label("Every collection, new ones too").uncheck()
    await form.get_by_role("button", name="Create key").click()
    await expect(
        page.get_by_role("alert").filter(has_text="Tick the collections the key reaches")
    ).to_be_visible()
    await expect(page.locator('tr[data-name="ke-none"]')).to_have_count(0)

    await form.get_by_label("Every collection, new ones too").check()
    await expect(form.get_by_label("ke-one", exact=True)).to_be_disabled()
    await form.get_by_role("button", name="Create key").click()
    await expect(page.locator('tr[data-name="ke-none"] td').nth(2)).to_have_text("every collection")
    # The form is back as it was: every collection ticked.
    await expect(form.get_by_label("Every collection, new ones too")).to_be_checked()


async def test_a_key_whose_collections_were_all_deleted_says_it_reaches_none(
    page: Page, stack: Stack
) -> None:
    """Its only collection deleted, the key reaches nothing: its Collections cell was empty, as if unknown."""
    async with await _admin(stack) as api:
        assert (await api.post("/collections", json={"name": "kz-only"})).status_code == 201
        key = {"name": "kz-reader", "role": "reader", "collections": ["kz-only"]}
        made = await api.post("/keys", json=key)
        assert made.status_code == 201, made.text
        assert (await api.delete("/collections/kz-only")).status_code == 204
    await _open_admin(page)
    await expect(page.locator('tr[data-name="kz-reader"] td').nth(2)).to_contain_text("none")


async def test_the_keys_short_cells_are_not_broken_inside_a_word_on_a_phone(
    browser: Browser, stack: Stack, page_console: Console
) -> None:
    """The table scrolls sideways on a 375 px screen, yet its columns were squeezed first: a role read
    "adm" / "in", a key's first characters one per line (words broken anywhere to fit)."""
    await create_key(stack, "kw-reader", "reader")
    phone = await new_page(browser, page_console, viewport={"width": 375, "height": 740}, color_scheme="dark")
    await sign_in(phone, stack.base_url, stack.admin_key)
    await phone.get_by_role("link", name="Admin", exact=True).click()
    row = phone.locator('tr[data-name="kw-reader"]')
    await expect(row).to_be_visible()
    # The lines its text takes: one rectangle a line.
    lines = "e => { const r = new Range(); r.selectNodeContents(e); return r.getClientRects().length; }"
    for cell in (row.locator("td").nth(1), row.locator("td").nth(3).locator("code")):
        assert await cell.evaluate(lines) == 1, await cell.inner_text()
    # The table scrolls inside its box: the page itself is no wider than the phone (the table's visually
    # hidden caption widened it to 874 px, a page that panned sideways).
    assert await phone.evaluate("document.documentElement.scrollWidth") == 375


async def test_the_row_actions_are_not_broken_letter_by_letter_on_a_phone(
    browser: Browser, stack: Stack, page_console: Console
) -> None:
    """Squeezed on a 375 px screen, Revoke and Delete were written one letter a line, every row as tall."""
    await create_key(stack, "ka-reader", "reader")
    async with await _admin(stack) as api:
        assert (await api.post("/collections", json={"name": "ka-coll"})).status_code == 201
    phone = await new_page(browser, page_console, viewport={"width": 375, "height": 740})
    await sign_in(phone, stack.base_url, stack.admin_key)
    await phone.get_by_role("link", name="Admin", exact=True).click()
    lines = "e => { const r = new Range(); r.selectNodeContents(e); return r.getClientRects().length; }"
    for name in ("Revoke ka-reader", "Delete ka-coll", "Edit ka-coll"):
        button = phone.get_by_role("button", name=name)
        await expect(button).to_be_visible()
        assert await button.evaluate(lines) == 1, name


def _task_row(page: Page, name: str) -> Locator:
    return page.locator(f'.tasks-table tr[data-name="{name}"]')


async def test_the_tasks_page_shows_why_a_task_failed_and_retries_and_cancels(
    page: Page, stack: Stack, page_console: Console
) -> None:
    """Admin's Tasks: each task's status and the reason of a failure in full; a failed task retried, a
    queued one cancelled, every failed one retried after a confirmation naming how many; a retry the
    server refuses says the server's sentence on the page."""
    page_console.allow("409")  # the retry another admin made first
    async with await _admin(stack) as api:
        made = await api.post("/collections", json={"name": "tq"})
        assert made.status_code == 201, made.text
        collection_id = made.json()["id"]
    broken = {
        "broken-a.pdf": b"%PDF-1.7\nnot a PDF \x00\xff a",
        "broken-b.pdf": b"%PDF-1.7\nnot a PDF \x00\xff b",
    }
    tasks = await upload_and_wait(stack, broken, collection="tq")
    assert {t["status"] for t in tasks.values()} == {"failed"}, tasks
    await page.get_by_role("link", name="Admin", exact=True).click()
    await page.get_by_role("link", name="Tasks", exact=True).click()
    await expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    with worker_paused(stack):  # what is queued or retried now stays queued
        async with await _admin(stack) as api:
            queued = await api.post(
                "/upload",
                files=[
                    ("files", ("waiting.txt", b"Waiting.")),
                ],
                data={"collection": "tq"},
            )
            assert queued.status_code == 202, queued.text
        await page.locator("#tasks-collection").select_option("tq")
        assert f"collection={collection_id}" in page.url
        await expect(_task_row(page, "waiting.txt").locator(".badge")).to_have_text("queued")
        reason = _task_row(page, "broken-a.pdf").locator(".task-reason")
        stored = tasks["broken-a.pdf"]["error"]
        assert stored and len(stored) > 20
        await expect(reason).to_have_text(stored)  # in full, not cut
        await expect(_task_row(page, "broken-a.pdf").locator(".badge")).to_have_text("failed")

        await page.get_by_role("button", name="Cancel waiting.txt").click()
        await _confirm(page, "Cancel task")
        await expect(page.get_by_role("status").filter(has_text="“waiting.txt” is cancelled")).to_be_visible()
        await expect(_task_row(page, "waiting.txt").locator(".badge")).to_have_text("failed")
        await expect(_task_row(page, "waiting.txt").locator(".task-reason")).to_contain_text("Cancelled by")

        await page.get_by_role("button", name="Retry broken-a.pdf").click()
        await expect(
            page.get_by_role("status").filter(has_text="“broken-a.pdf” is queued again")
        ).to_be_visible()
        await expect(_task_row(page, "broken-a.pdf").locator(".badge")).to_have_text("queued")

        # Another admin retried broken-b.pdf meanwhile: the server's refusal is said, the row follows.
        async with await _admin(stack) as api:
            other = await api.post(f"/admin/tasks/{tasks['broken-b.pdf']['task_id']}/retry")
            assert other.status_code == 200, other.text
        await page.get_by_role("button", name="Retry broken-b.pdf").click()
        await expect(page.locator(".tasks-result")).to_contain_text("“broken-b.pdf” was not retried: task")
        await expect(page.locator(".tasks-result")).to_contain_text("only a failed task can be retried")
        await expect(_task_row(page, "broken-b.pdf").locator(".badge")).to_have_text("queued")

        await page.get_by_role("button", name="Retry all failed").click()
        dialog = page.get_by_role("dialog", name="Confirm")
        await expect(dialog).to_contain_text("Retry 1 failed task in “tq”?")
        await dialog.get_by_role("button", name="Retry 1").click()
        await expect(page.locator(".tasks-result")).to_have_text("1 task queued again.")
        await expect(_task_row(page, "waiting.txt").locator(".badge")).to_have_text("queued")

        await page.get_by_label("Status").select_option("failed")
        await expect(page.get_by_text("No task matches these filters.")).to_be_visible()


async def test_the_keys_are_shown_a_page_at_a_time(page: Page, stack: Stack) -> None:
    """Admin loaded every key at once: 50 a page now, with the pager of the other lists."""
    async with await _admin(stack) as api:
        names = [f"zpk-{n:02d}" for n in range(51)]
        for start in range(0, len(names), 17):
            made = await asyncio.gather(
                *(api.post("/keys", json={"name": n, "role": "reader"}) for n in names[start : start + 17])
            )
            assert all(r.status_code == 201 for r in made), [r.text for r in made if r.status_code != 201]
        total = (await api.get("/keys", params={"limit": 1})).json()["total"]
    await _open_admin(page)
    keys = page.locator("#keys-title ~ .table-wrap tbody tr")
    await expect(keys).to_have_count(50)
    await expect(page.get_by_text(f"Keys 1–50 of {total}")).to_be_visible()
    await page.get_by_role("button", name="Last page of keys").click()
    assert page.url.endswith("#/admin?page=2")
    await expect(keys).to_have_count(total - 50)
    await expect(page.locator('tr[data-name="zpk-50"]')).to_be_visible()
    await expect(page.locator('tr[data-name="bootstrap-admin"]')).to_have_count(0)


async def test_a_team_with_more_than_two_hundred_collections_reaches_every_one(
    page: Page, stack: Stack
) -> None:
    """The app asked for the first 200 collections (by name) and no more: at 230 the last 30 were in no
    switcher, no Admin list and no new key's choices, as if they did not exist. Last in this module: the
    collections stay."""
    async with await _admin(stack) as api:
        names = [f"zmany-{n:03d}" for n in range(205)]
        for start in range(0, len(names), 25):
            made = await asyncio.gather(
                *(api.post("/collections", json={"name": n}) for n in names[start : start + 25])
            )
            assert all(r.status_code == 201 for r in made), [r.text for r in made if r.status_code != 201]
        total = (await api.get("/collections", params={"limit": 1})).json()["total"]
    assert total > 205
    await _open_admin(page)
    await expect(page.locator('.admin-table tr[data-name="zmany-204"]')).to_have_count(1)
    switcher = page.locator("select#collection")
    await expect(switcher.locator("option")).to_have_count(total)
    await switcher.select_option("zmany-204")
    await expect(switcher).to_have_value("zmany-204")
    form = page.get_by_role("form", name="New API key")
    await form.get_by_label("Role").select_option("reader")
    await expect(form.get_by_label("zmany-204", exact=True)).to_have_count(1)


async def test_a_collection_made_while_the_list_is_paged_leaves_no_row_twice(
    page: Page, stack: Stack
) -> None:
    """The app pages the collections by name, 500 at a time. One made elsewhere between two pages, named
    before the first page's end, shifts the rest by one: the first page's last came again on the second,
    and stood twice in the switcher, Admin's list and a new key's choices."""
    async with await _admin(stack) as api:
        have = (await api.get("/collections", params={"limit": 1})).json()["total"]
        names = [f"zpaged-{n:03d}" for n in range(max(0, 505 - have))]
        for start in range(0, len(names), 25):
            made = await asyncio.gather(
                *(api.post("/collections", json={"name": n}) for n in names[start : start + 25])
            )
            assert all(r.status_code == 201 for r in made), [r.text for r in made if r.status_code != 201]

        made_meanwhile: list[int] = []

        async def elsewhere(route: Route) -> None:
            if "offset=500" in route.request.url:  # each time the list is loaded
                name = f"aaa-meanwhile-{len(made_meanwhile)}"
                made_meanwhile.append((await api.post("/collections", json={"name": name})).status_code)
            await route.continue_()

        await page.route(lambda url: "/collections?" in url, elsewhere)
        await _open_admin(page)
        options = page.locator("select#collection option")
        # Every page in: the first one's 500 show before the second's are asked for.
        await page.wait_for_function("document.querySelectorAll('select#collection option').length >= 505")
        values = await options.evaluate_all("(all) => all.map((o) => o.value)")
        assert made_meanwhile and set(made_meanwhile) == {201}, made_meanwhile
        assert len(values) >= 505 and len(values) == len(set(values)), len(values) - len(set(values))
