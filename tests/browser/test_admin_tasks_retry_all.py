"""Admin's Tasks (#/admin/tasks): "Retry all failed" over every collection is ONE request (the server
retries them all: POST /admin/tasks/retry {"all": true}), and a task's name links to its document while
it has one (a deleted document's task shows the name alone)."""

from __future__ import annotations

import re

import httpx
from playwright.async_api import Page, Request, Route, expect

from tests.browser.conftest import Console, Stack
from tests.browser.seed import bearer, upload_and_wait, worker_paused


def _api(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60)


async def _open_tasks(page: Page) -> None:
    await page.reload()
    await page.get_by_role("navigation", name="Main").wait_for()
    await page.get_by_role("link", name="Admin", exact=True).click()
    await page.get_by_role("link", name="Tasks", exact=True).click()
    await expect(page.get_by_role("heading", name="Tasks")).to_be_visible()


async def test_retry_all_failed_is_one_request_for_every_collection(page: Page, stack: Stack) -> None:
    async with _api(stack) as api:
        for name in ("ra", "rb"):
            assert (await api.post("/collections", json={"name": name})).status_code == 201
    tasks = await upload_and_wait(
        stack, {"broken-ra.pdf": b"%PDF-1.7\nnot a PDF \x00\xff ra"}, collection="ra"
    )
    tasks |= await upload_and_wait(
        stack, {"broken-rb.pdf": b"%PDF-1.7\nnot a PDF \x00\xff rb"}, collection="rb"
    )
    assert {t["status"] for t in tasks.values()} == {"failed"}, tasks
    # A failed task whose document was deleted since: selected, skipped with the reason.
    gone = await upload_and_wait(
        stack, {"broken-gone.pdf": b"%PDF-1.7\nnot a PDF \x00\xff gone"}, collection="rb"
    )
    async with _api(stack) as api:
        assert (await api.delete(f"/documents/{gone['broken-gone.pdf']['document_id']}")).status_code == 204
    posts: list[Request] = []
    page.on(
        "request", lambda r: posts.append(r) if r.method == "POST" and "/admin/tasks/retry" in r.url else None
    )
    await _open_tasks(page)
    with worker_paused(stack):  # what is retried now stays queued
        row = page.locator('.tasks-table tr[data-name="broken-rb.pdf"]')
        await expect(row.locator(".badge")).to_have_text("failed")
        await page.get_by_role("button", name="Retry all failed").click()
        dialog = page.get_by_role("dialog", name="Confirm")
        # The server counts what a retry would queue again: not the task whose document was deleted.
        await expect(dialog).to_contain_text(
            "3 failed tasks in every collection, 2 of them can be retried (a retry skips the others, saying"
            " why). Retry 2?"
        )
        await dialog.get_by_role("button", name="Retry 2").click()
        result = page.locator(".tasks-result")
        await expect(result.locator("p")).to_have_text("2 tasks queued again; 1 left as it was.")
        await expect(result.locator("li")).to_have_text(
            f"the document of task {gone['broken-gone.pdf']['task_id']} was deleted: upload the file again"
        )
        for name in tasks:
            await expect(page.locator(f'.tasks-table tr[data-name="{name}"] .badge')).to_have_text("queued")
        assert len(posts) == 1, [p.url for p in posts]
        assert posts[0].url.endswith("/admin/tasks/retry") and posts[0].post_data_json == {"all": True}
        async with _api(stack) as api:
            queued = (await api.get("/admin/tasks", params={"status": "queued"})).json()
        assert {t["task_id"] for t in queued["items"]} == {t["task_id"] for t in tasks.values()}


async def test_a_tasks_name_opens_its_document_unless_it_was_deleted(page: Page, stack: Stack) -> None:
    tasks = await upload_and_wait(
        stack, {"kept-doc.txt": b"Lichens are fungi and algae together.", "gone-doc.txt": b"Moss."}
    )
    async with _api(stack) as api:
        assert (await api.delete(f"/documents/{tasks['gone-doc.txt']['document_id']}")).status_code == 204
    await _open_tasks(page)
    gone = page.locator('.tasks-table tr[data-name="gone-doc.txt"] .name-cell')
    await expect(gone).to_contain_text("gone-doc.txt")
    await expect(gone.get_by_role("link")).to_have_count(0)
    await (
        page.locator('.tasks-table tr[data-name="kept-doc.txt"]')
        .get_by_role("link", name="kept-doc.txt")
        .click()
    )
    await expect(page).to_have_url(re.compile(f"#/documents/{tasks['kept-doc.txt']['document_id']}$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text("kept-doc.txt")


async def test_a_refused_retry_all_does_not_say_tasks_were_queued_but_a_stopped_one_does(
    page: Page, stack: Stack, page_console: Console
) -> None:
    """The server retries in slices: a 5xx (or no answer) may come after some were queued again, and the
    page says so; a 4xx refused the request before any, and it said the same (review)."""
    page_console.allow("422")
    page_console.allow("503")
    await upload_and_wait(stack, {"broken-refused.pdf": b"%PDF-1.7\nnot a PDF \x00\xff refused"})
    answers = [
        (422, {"detail": 'name exactly one of batch_id, collection and "all": true'}),
        (503, {"detail": "The database did not answer in time: try again."}),
    ]

    async def answer(route: Route) -> None:
        status, body = answers.pop(0)
        await route.fulfill(status=status, json=body)

    await page.route("**/admin/tasks/retry", answer)
    await _open_tasks(page)
    result = page.locator(".tasks-result")
    for said, note in (("name exactly one", 0), ("did not answer in time", 1)):
        await page.get_by_role("button", name="Retry all failed").click()
        dialog = page.get_by_role("dialog", name="Confirm")
        await dialog.get_by_role("button", name=re.compile(r"^Retry \d+$")).click()
        await expect(result.locator("p.form-error")).to_contain_text(said)
        await expect(result.locator("li")).to_have_count(note)
    await expect(result.locator("li")).to_have_text(
        "Tasks retried before it stopped are queued again (the list shows them)."
    )


async def test_retry_all_failed_says_when_none_of_them_can_be_retried(page: Page, stack: Stack) -> None:
    """The only failed task of the collection lost its document: nothing to retry, and no dialog asking
    to retry it (it asked "Retry 1 failed task?", then left it failed)."""
    async with _api(stack) as api:
        made = await api.post("/collections", json={"name": "rz"})
        assert made.status_code == 201, made.text
    gone = await upload_and_wait(
        stack, {"broken-rz.pdf": b"%PDF-1.7\nnot a PDF \x00\xff rz"}, collection="rz"
    )
    async with _api(stack) as api:
        assert (await api.delete(f"/documents/{gone['broken-rz.pdf']['document_id']}")).status_code == 204
    await _open_tasks(page)
    await page.goto(f"{stack.base_url}/#/admin/tasks?collection={made.json()['id']}")
    await expect(page.locator('.tasks-table tr[data-name="broken-rz.pdf"] .badge')).to_have_text("failed")
    await page.get_by_role("button", name="Retry all failed").click()
    await expect(page.locator(".tasks-result p")).to_have_text(
        "1 failed task in “rz”, none of which can be retried now (each one's Retry button says why):"
        " nothing to retry."
    )
    await expect(page.get_by_role("dialog", name="Confirm")).to_have_count(0)
