"""Uploading from the Documents view: several files with their progress to the end, a file the worker
fails on with its reason, a duplicate skipped before sending (linked to the stored document), the server's
sentence for a refused type, and polling that resumes after navigating away and after a reload."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.async_api import Browser, Page, Request, expect

from rag_server.client import AsyncClient
from tests.browser.conftest import Console, Stack, new_page, sign_in
from tests.browser.seed import bearer, upload_and_wait
from tests.support.processes import start_worker

GARBAGE_PDF = b"%PDF-1.7\nnot a real PDF at all \x00\xff\xfe trailer"


def write(folder: Path, files: dict[str, bytes]) -> list[Path]:
    paths = []
    for name, content in files.items():
        path = folder / name
        path.write_bytes(content)
        paths.append(path)
    return paths


def upload_row(page: Page, name: str) -> Any:
    return page.locator(".upload-row", has=page.locator(".name", has_text=name))


async def stored_documents(stack: Stack, name: str) -> list[tuple[str, int]]:
    """(name, version) of the documents whose name holds `name`, by name."""
    async with AsyncClient(stack.base_url, api_key=stack.admin_key) as rag:
        listed = await rag.documents(name=name, sort="name", order="asc")
    return [(d.filename, d.version) for d in listed.items]


async def open_upload_panel(page: Page) -> None:
    await page.get_by_role("link", name="Documents").click()
    upload = page.get_by_role("button", name="Upload", exact=True)
    await upload.click()
    await expect(upload).to_have_attribute("aria-expanded", "true")
    await expect(page.get_by_role("heading", name="Upload to default")).to_be_visible()


async def test_several_files_complete_one_fails_with_its_reason_and_a_duplicate_is_skipped(
    page: Page, tmp_path: Path
) -> None:
    posts: list[str] = []

    def record(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/upload"):
            posts.append(request.url)

    page.on("request", record)
    await open_upload_panel(page)
    files = write(
        tmp_path,
        {
            "alpha.txt": b"Alpha talks about glaciers and their slow retreat. " * 40,
            "beta.md": b"# Beta\n\nBeta is a note about tide pools and the creatures living in them.",
            "gamma.txt": b"Gamma covers volcanic soil and the vineyards growing on it. " * 10,
            "broken.pdf": GARBAGE_PDF,
        },
    )
    await page.get_by_label("Files to upload").set_input_files(files)
    for name in ("alpha.txt", "beta.md", "gamma.txt"):
        row = upload_row(page, name)
        await expect(row).to_have_attribute("data-status", "completed", timeout=60_000)
        await expect(row.get_by_role("link")).to_have_text(re.compile(r"^[1-9]\d* chunks? · view$"))
    failed = upload_row(page, "broken.pdf")
    await expect(failed).to_have_attribute("data-status", "failed", timeout=60_000)
    await expect(failed).to_contain_text("The PDF is damaged or not a PDF and could not be read")
    await expect(page.locator(".upload-summary")).to_contain_text("4 of 4 finished · 3 completed · 1 failed")
    assert len(posts) == 1  # one batch

    # When the batch is done the table shows every document, the failed one with its reason.
    table = page.locator(".documents-table")
    await expect(table.locator("tbody tr")).to_have_count(4)
    await expect(table.locator("tr", has_text="broken.pdf")).to_contain_text("The PDF is damaged")
    await expect(table.locator("tr", has_text="alpha.txt").locator(".badge")).to_have_text("ready")
    await page.screenshot(path="/tmp/shots/upload.png", full_page=True)

    # The same bytes again under another name: found by its SHA-256 before anything is sent.
    alpha_link = await upload_row(page, "alpha.txt").get_by_role("link").get_attribute("href")
    await page.get_by_role("button", name="Clear finished").click()
    await expect(page.locator(".upload-row")).to_have_count(0)
    again = write(tmp_path, {"alpha-copy.txt": files[0].read_bytes()})
    await page.get_by_label("Files to upload").set_input_files(again)
    duplicate = upload_row(page, "alpha-copy.txt")
    await expect(duplicate).to_have_attribute("data-status", "duplicate")
    link = duplicate.get_by_role("link", name="Already stored as alpha.txt")
    await expect(link).to_have_attribute("href", alpha_link or "")
    assert len(posts) == 1, "the duplicate was sent"
    await link.click()
    await expect(page.get_by_role("heading", name="alpha.txt")).to_be_visible()


async def test_an_unsupported_type_or_an_empty_file_is_refused_with_a_sentence_and_the_rest_goes_through(
    page: Page, page_console: Console, tmp_path: Path
) -> None:
    page_console.allow("415")  # the refused request, as the browser logs it
    await open_upload_panel(page)
    files = write(
        tmp_path,
        {
            "picture.xyz": b"not a supported type",
            "empty.md": b"",
            "delta.txt": b"Delta is about river deltas and silt. " * 5,
        },
    )
    await page.get_by_label("Files to upload").set_input_files(files)
    refused = upload_row(page, "picture.xyz")
    await expect(refused).to_have_attribute("data-status", "refused")
    await expect(refused).to_contain_text("Unsupported file type: picture.xyz. Supported: .csv")
    empty = upload_row(page, "empty.md")  # refused before sending: the server refuses it, and its batch
    await expect(empty).to_have_attribute("data-status", "refused")
    await expect(empty).to_contain_text("empty.md is empty (0 bytes): there is nothing in it to read.")
    # The batch was refused as a whole for that file: the other file went again, alone, and completes.
    await expect(upload_row(page, "delta.txt")).to_have_attribute("data-status", "completed", timeout=60_000)


async def test_polling_resumes_after_navigating_away_and_after_a_reload(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    # No worker: the upload stays queued for as long as the test needs, deterministically.
    assert stack.worker.stop() == 0
    try:
        await open_upload_panel(page)
        files = write(tmp_path, {"epsilon.txt": b"Epsilon is about the smallest things. " * 20})
        await page.get_by_label("Files to upload").set_input_files(files)
        row = upload_row(page, "epsilon.txt")
        await expect(row).to_have_attribute("data-status", "queued")
        # Stored, not processed yet: the table lists it at once.
        epsilon = page.locator(".documents-table tr", has_text="epsilon.txt")
        await expect(epsilon.locator(".badge")).to_have_text("queued")

        await page.get_by_role("link", name="Search").click()
        await expect(page.get_by_role("heading", name="Search")).to_be_visible()
        await page.get_by_role("link", name="Documents").click()
        # Back: the panel is open again on the batch still running.
        await expect(row).to_have_attribute("data-status", "queued")
        await page.reload()
        # A reload forgets everything but the batch id (sessionStorage): the row comes from the server.
        await expect(row).to_have_attribute("data-status", "queued")
        await expect(page.get_by_role("heading", name="Upload to default")).to_be_visible()
    finally:
        stack.worker = start_worker(stack.env, tmp_path / "worker.log")
    await expect(row).to_have_attribute("data-status", "completed", timeout=60_000)
    await expect(epsilon.locator(".badge")).to_have_text("ready")
    stored = await page.evaluate("Object.keys(sessionStorage).filter((k) => k.startsWith('rag.uploads.'))")
    assert stored == []  # the batch is done: nothing left to resume


async def test_the_keyboard_focus_survives_the_refresh_of_a_list_being_processed(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    """While a document is queued the table is rebuilt every 4 s, and the focused row's button went with it:
    a keyboard user was thrown back to the top of the page at each refresh."""
    stack.worker.stop()  # no worker: the upload stays queued, the list keeps refreshing
    try:
        async with httpx.AsyncClient(
            base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
        ) as client:
            files = [("files", ("zeta.txt", b"Zeta is about the last letters. " * 20))]
            assert (await client.post("/upload", files=files)).status_code == 202
        await page.get_by_role("link", name="Documents").click()
        await expect(page.locator(".documents-table tr", has_text="zeta.txt").locator(".badge")).to_have_text(
            "queued"
        )
        download = page.get_by_role("button", name="Download zeta.txt")
        await download.focus()
        for _ in range(2):  # the second refresh starts after the first one's rows were drawn
            async with page.expect_response(lambda r: "/documents?" in r.url, timeout=20_000):
                pass
        await expect(download).to_be_focused()
        # A row's selection box too: focused and checked after the rows are rebuilt.
        box = page.get_by_label("Select zeta.txt")
        await box.focus()
        await page.keyboard.press("Space")
        for _ in range(2):
            async with page.expect_response(lambda r: "/documents?" in r.url, timeout=20_000):
                pass
        await expect(box).to_be_focused()
        await expect(box).to_be_checked()
    finally:
        stack.worker = start_worker(stack.env, tmp_path / "worker.log")


async def test_a_failed_documents_bytes_while_a_new_file_for_it_waits_fail_at_once_with_the_reason(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    """The upload's answer already says the task failed (a second task of that document would have
    raced the waiting new file): the row shows why, not a bare "failed" (nothing of it is polled)."""
    broken = GARBAGE_PDF + b" quokka"
    [failed] = (await upload_and_wait(stack, {"quokka.pdf": broken})).values()
    assert failed["status"] == "failed"
    stack.worker.stop()  # no worker: the new file for the document waits, queued
    try:
        async with httpx.AsyncClient(
            base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
        ) as client:
            put = await client.put(
                f"/documents/{failed['document_id']}/file",
                files={"file": ("quokka.txt", b"Quokkas live on Rottnest Island. " * 10)},
            )
            assert put.status_code == 202, put.text
        await open_upload_panel(page)
        await page.get_by_label("Files to upload").set_input_files(
            write(tmp_path, {"quokka-copy.pdf": broken})
        )
        row = upload_row(page, "quokka-copy.pdf")
        await expect(row).to_have_attribute("data-status", "failed")
        await expect(row).to_contain_text("is waiting to replace them")
        await expect(row).to_contain_text("upload this file again")
    finally:
        stack.worker = start_worker(stack.env, tmp_path / "worker.log")


async def test_a_folder_is_uploaded_with_its_subfolders_and_hidden_files_are_left_out(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    """A file's document is named by its path inside the folder picked, as `rag-server ingest FOLDER`
    names it: one file name in two sub-folders is two documents (it was one name, twice)."""
    folder = tmp_path / "notes"
    for sub in ("nested", "other"):
        (folder / sub).mkdir(parents=True)
        (folder / sub / "two.md").write_bytes(
            f"# Two\n\nNote two of {sub} is about migrating cranes.".encode()
        )
    (folder / "one.txt").write_bytes(b"Note one is about lighthouses on rocky coasts. " * 5)
    (folder / ".DS_Store").write_bytes(b"\x00\x01 finder junk")
    await open_upload_panel(page)
    await page.get_by_label("Folder to upload").set_input_files(folder)
    for name in ("one.txt", "nested/two.md", "other/two.md"):
        row = page.locator(".upload-row", has=page.locator(".name", has_text=re.compile(f"^{name}$")))
        await expect(row).to_have_attribute("data-status", "completed", timeout=60_000)
    await expect(page.locator(".upload-row")).to_have_count(3)
    assert await stored_documents(stack, "two.md") == [("nested/two.md", 1), ("other/two.md", 1)]
    # The table shows each folder before the file's own name, muted.
    await page.get_by_label("Name", exact=True).fill("nested/two.md")
    link = page.get_by_role("link", name="nested/two.md", exact=True)
    await expect(link.locator(".doc-folder")).to_have_text("nested/")
    await expect(page.locator("tbody tr")).to_have_count(1)


async def drop_from_disk(page: Page, paths: list[Path]) -> None:
    """Files and folders dropped on the upload panel's drop zone as from a file manager (Chromium's drag
    and drop, driven through CDP): folders arrive as entries to walk, like a person's drop."""
    box = await page.locator(".dropzone").bounding_box()
    assert box is not None
    where = {"x": box["x"] + box["width"] / 2, "y": box["y"] + box["height"] / 2}
    data = {"items": [], "files": [str(p) for p in paths], "dragOperationsMask": 1}
    cdp = await page.context.new_cdp_session(page)
    for kind in ("dragEnter", "dragOver", "drop"):
        await cdp.send("Input.dispatchDragEvent", {"type": kind, **where, "data": data})


async def test_a_dropped_folder_names_its_files_by_their_paths_inside_it(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    """A real drop of a folder from disk (Chromium's drag and drop, driven through CDP): its files are named
    as a picked folder's are, the folder's own name left out, and its hidden files stay behind."""
    folder = tmp_path / "dropped-notes"
    (folder / "deep").mkdir(parents=True)
    (folder / "deep" / "three.md").write_bytes(b"# Three\n\nA dropped folder's note about tidal bores.")
    (folder / "four.txt").write_bytes(b"A dropped folder's fourth note, about sand dunes.")
    (folder / ".hidden.txt").write_bytes(b"An editor's scratch file.")
    await open_upload_panel(page)
    await drop_from_disk(page, [folder])
    rows = page.locator(".upload-row")
    await expect(rows).to_have_count(2)
    await expect(rows.locator(".name")).to_have_text(["four.txt", "deep/three.md"])
    for i in range(2):
        await expect(rows.nth(i)).to_have_attribute("data-status", "completed", timeout=60_000)
    assert await stored_documents(stack, "three.md") == [("deep/three.md", 1)]


async def test_files_dropped_on_the_page_are_uploaded(page: Page) -> None:
    await page.get_by_role("link", name="Documents").click()
    await expect(page.get_by_role("button", name="Upload", exact=True)).to_be_visible()
    transfer = await page.evaluate_handle(
        """() => {
            const transfer = new DataTransfer();
            transfer.items.add(new File(["Dropped notes about coral reefs and their fish."], "dropped.txt",
                                        {type: "text/plain"}));
            return transfer;
        }"""
    )
    # Dropped on the table, not on the drop zone: still an upload (the browser does not open the file).
    await page.locator("h1", has_text="Documents").dispatch_event("dragover", {"dataTransfer": transfer})
    await page.locator("h1", has_text="Documents").dispatch_event("drop", {"dataTransfer": transfer})
    await expect(page.get_by_role("heading", name="Upload to default")).to_be_visible()
    dropped = upload_row(page, "dropped.txt")
    await expect(dropped).to_have_attribute("data-status", "completed", timeout=60_000)


async def test_a_file_dropped_outside_the_documents_view_keeps_the_app(page: Page) -> None:
    """Nothing took a drop on Chat or Search: the browser left the app to open the dropped file (a chat
    being written, gone). The app keeps the page and says where uploads go."""
    await page.get_by_role("link", name="Chat", exact=True).click()
    await expect(page.get_by_label("Message", exact=True)).to_be_visible()
    kept = await page.evaluate(
        """() => {
            const transfer = new DataTransfer();
            transfer.items.add(new File(["notes"], "notes.txt", {type: "text/plain"}));
            const target = document.querySelector(".thread");
            const over = new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true});
            const drop = new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true});
            target.dispatchEvent(over);
            target.dispatchEvent(drop);
            return [over.defaultPrevented, drop.defaultPrevented];
        }"""
    )
    assert kept == [True, True]  # not prevented = the browser opens the file in place of the app
    await expect(page.locator(".toast")).to_have_text("To upload files, drop them on the Documents page.")


async def test_after_leaving_the_documents_view_a_drop_uploads_nothing(page: Page, tmp_path: Path) -> None:
    """The Documents list takes dropped files while it is shown; once left (for Search, or for a document's
    page inside the same view) its target goes with it: a drop there is kept from the browser (which would
    leave the app to show the file) and sends nothing."""
    await open_upload_panel(page)
    await page.get_by_label("Files to upload").set_input_files(
        write(tmp_path, {"kept.txt": b"Kept notes about lighthouse keepers and their lamps."})
    )
    await expect(upload_row(page, "kept.txt")).to_have_attribute("data-status", "completed", timeout=60_000)
    drop = """(name) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File(["A stray file nobody meant to upload."], name, {type: "text/plain"}));
        const over = new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true});
        const drop = new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true});
        document.querySelector("main h1").dispatchEvent(over);
        document.querySelector("main h1").dispatchEvent(drop);
        return [over.defaultPrevented, drop.defaultPrevented];
    }"""
    where = "To upload files, drop them on the Documents page."
    await page.get_by_role("link", name="Search").click()
    await expect(page.get_by_role("heading", name="Search")).to_be_visible()
    assert await page.evaluate(drop, "stray-search.txt") == [True, True]
    await expect(page.locator(".toast").last).to_have_text(where)
    # A document's page is still the Documents view, without the list's upload panel.
    await page.get_by_role("link", name="Documents").click()
    await page.locator(".documents-table").get_by_role("link", name="kept.txt").click()
    await expect(page.get_by_role("heading", name="kept.txt")).to_be_visible()
    assert await page.evaluate(drop, "stray-document.txt") == [True, True]
    await expect(page.locator(".toast").last).to_have_text(where)
    # Back on the list, whose panel shows this tab's uploads: neither stray file was sent.
    await page.get_by_role("link", name="All documents").click()
    await expect(upload_row(page, "kept.txt")).to_be_visible()
    await expect(page.locator(".upload-row")).to_have_count(1)


async def send_held(page: Page, tmp_path: Path, name: str) -> list[Any]:
    """Start sending the file `name` to an /upload that never answers: it stays "sending" (the held
    requests are returned: kept, they are never answered)."""
    held: list[Any] = []
    await page.route("**/upload", lambda route: held.append(route))
    await open_upload_panel(page)
    await page.get_by_label("Files to upload").set_input_files(
        write(tmp_path, {name: f"{name} is a file still on its way. ".encode() * 10})
    )
    await expect(upload_row(page, name)).to_have_attribute("data-status", "sending")
    return held


async def test_closing_the_tab_while_files_are_being_sent_asks_first(page: Page, tmp_path: Path) -> None:
    """A reload or a closed tab during the upload itself lost the unsent files without a word (a batch the
    server has resumes after a reload; an unsent file's bytes exist only in the tab)."""
    await send_held(page, tmp_path, "eta.txt")
    async with page.expect_event("dialog") as asked:
        await page.close(run_before_unload=True)
    dialog = await asked.value
    assert dialog.type == "beforeunload"
    await dialog.accept()


async def test_signing_out_while_files_are_being_sent_asks_first(page: Page, tmp_path: Path) -> None:
    """Sign-out cleared the key before the browser's leave prompt: "Stay" left the app up with no key and
    the files failing with 401."""
    await send_held(page, tmp_path, "theta.txt")
    sign_out = page.get_by_role("button", name="Sign out")
    await sign_out.click()
    dialog = page.get_by_role("dialog", name="Confirm")
    await expect(dialog).to_contain_text("Files are still being sent")
    await dialog.get_by_role("button", name="Cancel").click()
    # Still signed in, the file still on its way.
    await expect(sign_out).to_be_visible()
    await expect(upload_row(page, "theta.txt")).to_have_attribute("data-status", "sending")


@pytest.mark.parametrize("failure", ["refused", "gateway 502"])
async def test_files_that_never_reached_the_server_can_be_sent_again(
    page: Page, page_console: Console, tmp_path: Path, failure: str
) -> None:
    """A refused connection, or a proxy's 5xx page, marked the files "refused" with nothing to do about
    it but pick them again: they are "not sent", kept in the tab, and one button sends them again."""
    if failure == "refused":
        page_console.allow("ERR_CONNECTION_REFUSED")
        await page.route("**/upload", lambda route: route.abort("connectionrefused"))
        reason = "The server cannot be reached."
    else:
        page_console.allow("502")
        await page.route(
            "**/upload",
            lambda route: route.fulfill(status=502, content_type="text/html", body="<h1>Bad Gateway</h1>"),
        )
        reason = "The server answered 502."
    await open_upload_panel(page)
    # Names (and so bytes) of their own per case: the stack is shared, and a second copy is a duplicate.
    names = [f"iota-{failure[:3]}.txt", f"kappa-{failure[:3]}.txt"]
    await page.get_by_label("Files to upload").set_input_files(
        write(
            tmp_path,
            {name: f"{name} tells of a file that waited for the network. ".encode() * 5 for name in names},
        )
    )
    for name in names:
        row = upload_row(page, name)
        await expect(row).to_have_attribute("data-status", "unsent")
        await expect(row).to_contain_text("not sent")
        await expect(row).to_contain_text(f"Not sent: {reason}")
        await expect(row.locator(".name")).to_have_attribute("title", name)  # shown whole on hover
    await expect(page.locator(".upload-summary")).to_contain_text("2 not sent")
    await page.unroute("**/upload")
    await page.get_by_role("button", name="Send again").click()
    for name in names:
        await expect(upload_row(page, name)).to_have_attribute("data-status", "completed", timeout=60_000)
    await expect(page.get_by_role("button", name="Send again")).to_be_hidden()


async def test_a_file_one_byte_over_the_limit_says_so_in_bytes(page: Page, stack: Stack) -> None:
    """One byte too many read "50.0 MB, over the limit of 50.0 MB"; the server already said it in bytes."""
    await page.goto(stack.base_url + "/")
    said = await page.evaluate(
        """async () => {
            const { tooLarge } = await import("/assets/upload.js");
            const limit = 50 * 1024 * 1024;
            return [tooLarge("huge.txt", limit + 1, limit), tooLarge("huger.txt", 2 * limit, limit)];
        }"""
    )
    assert said == [
        "huge.txt is 52,428,801 bytes, over the limit of 52,428,800 bytes per file.",
        "huger.txt is 100.0 MB, over the limit of 50.0 MB per file.",
    ]


async def upload_two_versions(
    page: Page, tmp_path: Path, name: str, versions: tuple[bytes, bytes], *, replace: bool
) -> tuple[str | None, Any]:
    """One file uploaded, then a changed file of its name: (the first one's document link, the second's
    row once completed)."""
    await open_upload_panel(page)
    first = tmp_path / "v1" / name
    second = tmp_path / "v2" / name
    for path, content in zip((first, second), versions, strict=True):
        path.parent.mkdir()
        path.write_bytes(content)
    await page.get_by_label("Files to upload").set_input_files(first)
    row = upload_row(page, name)
    await expect(row).to_have_attribute("data-status", "completed", timeout=60_000)
    await expect(row.locator(".namesake")).to_have_count(0)
    stored = await row.get_by_role("link").first.get_attribute("href")
    if replace:
        await page.get_by_label("Replace documents of the same name").check()
    await page.get_by_label("Files to upload").set_input_files(second)
    changed = upload_row(page, name).last
    await expect(changed).to_have_attribute("data-status", "completed", timeout=60_000)
    return stored, changed


async def test_a_changed_file_of_a_stored_name_says_it_is_added_beside_it(page: Page, tmp_path: Path) -> None:
    """It became a second document of that name without a word (the old text still searched and cited)."""
    versions = (b"Employees get 20 vacation days a year.", b"Employees get 25 vacation days a year.")
    stored, changed = await upload_two_versions(page, tmp_path, "policy.txt", versions, replace=False)
    await expect(changed).to_contain_text("added beside the document of this name")
    assert await changed.locator(".namesake").get_attribute("href") == stored


async def test_a_changed_file_of_a_folder_says_which_document_of_its_bare_name_it_is_added_beside(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    """A document stored before names kept their folders has the file's name alone: a folder's changed
    file of that name became a second document without a word (the names differ: "water/pond.txt")."""
    bare = tmp_path / "bare" / "pond.txt"
    bare.parent.mkdir()
    bare.write_bytes(b"The garden pond holds 12 carp in spring.")
    await open_upload_panel(page)
    await page.get_by_label("Files to upload").set_input_files(bare)
    row = upload_row(page, "pond.txt")
    await expect(row).to_have_attribute("data-status", "completed", timeout=60_000)
    stored = await row.get_by_role("link").first.get_attribute("href")
    # Marked as migration 0020 marks the documents stored before it.
    async with await psycopg.AsyncConnection.connect(stack.database_url) as owner:
        await owner.execute("UPDATE documents SET named_before_paths = true WHERE filename = 'pond.txt'")
    folder = tmp_path / "garden"
    (folder / "water").mkdir(parents=True)
    (folder / "water" / "pond.txt").write_bytes(b"The garden pond holds 14 carp in spring.")
    await page.get_by_label("Folder to upload").set_input_files(folder)
    changed = page.locator(".upload-row", has=page.locator(".name", has_text=re.compile("^water/pond.txt$")))
    await expect(changed).to_have_attribute("data-status", "completed", timeout=60_000)
    await expect(changed).to_contain_text("added beside the document named “pond.txt” (stored before")
    assert await changed.locator(".namesake").get_attribute("href") == stored


async def test_replace_documents_of_the_same_name_makes_a_new_version(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    """The panel had no way to say "this is the new version" (the CLI's --replace): a changed file was
    always a second document."""
    versions = (
        b"The night shift starts at 22:00 on weekdays.",
        b"The night shift starts at 23:00 on weekdays.",
    )
    stored, changed = await upload_two_versions(page, tmp_path, "rota.txt", versions, replace=True)
    await expect(changed).to_contain_text("version 2")
    assert await changed.get_by_role("link").first.get_attribute("href") == stored
    assert await stored_documents(stack, "rota.txt") == [("rota.txt", 2)]


async def test_replacing_refuses_one_name_from_two_folders_dropped_together(
    page: Page, tmp_path: Path
) -> None:
    """Two folders, each with a handbook.md: which one is the new version of the stored handbook.md? The
    server refused the whole batch (a 422) and every file of it was marked refused; now those two are,
    with why, and the rest goes through."""
    for team in ("team-a", "team-b"):
        (tmp_path / team).mkdir()
        (tmp_path / team / "handbook.md").write_bytes(
            f"# Handbook\n\nThe {team} handbook on kayaks.".encode()
        )
    (tmp_path / "team-b" / "roster.md").write_bytes(b"# Roster\n\nWho paddles which kayak on Sundays.")
    await open_upload_panel(page)
    await page.get_by_label("Replace documents of the same name").check()
    await drop_from_disk(page, [tmp_path / "team-a", tmp_path / "team-b"])
    refused = page.locator(".upload-row", has=page.locator(".name", has_text=re.compile("^handbook.md$")))
    await expect(refused).to_have_count(2)
    for i in range(2):
        await expect(refused.nth(i)).to_have_attribute("data-status", "refused")
        await expect(refused.nth(i)).to_contain_text("handbook.md is the name of 2 files added together")
    await expect(upload_row(page, "roster.md")).to_have_attribute("data-status", "completed", timeout=60_000)


async def test_one_name_from_two_folders_dropped_together_is_two_documents_and_the_panel_says_so(
    page: Page, tmp_path: Path
) -> None:
    """Without "Replace", both handbook.md files are kept, as two documents of one name. The server's answer
    said so (its `warnings`), and the panel showed nothing: the user found out when a search named two
    handbook.md. "Clear finished" clears the warning with the rows."""
    for team in ("team-a", "team-b"):
        (tmp_path / team).mkdir()
        (tmp_path / team / "handbook.md").write_bytes(f"# Handbook\n\nThe {team} canoe handbook.".encode())
    await open_upload_panel(page)
    await drop_from_disk(page, [tmp_path / "team-a", tmp_path / "team-b"])
    rows = page.locator(".upload-row", has=page.locator(".name", has_text=re.compile("^handbook.md$")))
    await expect(rows).to_have_count(2)
    for i in range(2):
        await expect(rows.nth(i)).to_have_attribute("data-status", "completed", timeout=60_000)
    warning = page.get_by_role("status", name="Upload warnings")
    await expect(warning).to_contain_text("'handbook.md' is the name of more than one file of this upload")
    await page.get_by_role("button", name="Clear finished").click()
    await expect(warning).to_be_hidden()
    await expect(rows).to_have_count(0)


async def test_a_refused_replacement_is_refused_alone_when_files_are_not_checked_first(
    page: Page, browser: Browser, stack: Stack, page_console: Console, tmp_path: Path
) -> None:
    """Without hashing in the browser (plain http on a LAN address), nothing is checked before sending: a
    file whose bytes another document holds makes the server refuse its whole replacing upload (409). The
    batch is split until that file stands alone, with the server's sentence, and the others go through."""
    page_console.allow("409")
    (tmp_path / "stored").mkdir()
    stored = write(
        tmp_path / "stored",
        {
            "ferry.txt": b"The ferry to the island leaves at 07:15 and 16:40.",
            "timetable.txt": b"The island's bus meets every ferry at the harbour.",
        },
    )
    await open_upload_panel(page)
    await page.get_by_label("Files to upload").set_input_files(stored)
    for name in ("ferry.txt", "timetable.txt"):
        await expect(upload_row(page, name)).to_have_attribute("data-status", "completed", timeout=60_000)
    plain = await new_page(browser, page_console)
    await plain.add_init_script("Object.defineProperty(window, 'isSecureContext', { value: false })")
    await sign_in(plain, stack.base_url, stack.admin_key)
    await open_upload_panel(plain)
    await plain.get_by_label("Replace documents of the same name").check()
    files = write(
        tmp_path,
        {
            # A new version of timetable.txt with ferry.txt's bytes: refused (dedup is per collection).
            "timetable.txt": b"The ferry to the island leaves at 07:15 and 16:40.",
            "fares.txt": b"A return ticket to the island costs 12 euros.",
            "piers.txt": b"Boarding is from pier 3 in summer and pier 1 in winter.",
        },
    )
    await plain.get_by_label("Files to upload").set_input_files(files)
    clash = upload_row(plain, "timetable.txt")
    await expect(clash).to_have_attribute("data-status", "refused", timeout=60_000)
    await expect(clash).to_contain_text("already stored in this collection as 'ferry.txt'")
    for name in ("fares.txt", "piers.txt"):
        await expect(upload_row(plain, name)).to_have_attribute("data-status", "completed", timeout=60_000)
    await plain.context.close()
