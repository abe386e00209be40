"""The chat view in a real browser: sessions, streaming, Stop, citations, safety, keyboard, small screens.

Documents are ingested through the API once per module; the fake LLM answers "According to the sources,
the answer to '<question>' is grounded [1]." (tests/fakes/llm_server.py).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, Request, Route, expect

from rag_server.chat.citations import CODE_SPAN_MAX
from tests.browser.chat_support import DOCS, answers, ask, ingest, thread
from tests.browser.conftest import Console, Stack, new_page, sign_in
from tests.fakes.llm_server import TITLE, Behaviour, FakeLLM

SESSION_URL = re.compile(r"#/chat/[0-9a-f-]{36}$")


@pytest.fixture(scope="module")
async def documents(stack: Stack) -> dict[str, str]:
    return await ingest(stack, DOCS)


@pytest.fixture
def fake(fake_llm: FakeLLM) -> FakeLLM:
    fake_llm.reset()
    return fake_llm


def sidebar_row(page: Page, title: str, archived: bool = False):  # type: ignore[no-untyped-def]
    list_name = "Archived chats" if archived else "Chats"
    return page.get_by_role("list", name=list_name, exact=True).locator(".session-item", has_text=title)


async def test_a_scripted_conversation(
    page: Page, documents: dict[str, str], fake: FakeLLM, page_console: Console
) -> None:
    page_console.allow("404")  # the deleted session's URL, at the end
    await page.get_by_role("button", name="New chat").click()
    first = await ask(page, "What is HNSW?")
    await expect(first).to_contain_text("According to the sources, the answer to 'What is HNSW?' is grounded")
    # The new chat's id came with the answer: the URL carries it, the sidebar lists it with its title.
    await expect(page).to_have_url(SESSION_URL)
    session_url = page.url
    await expect(sidebar_row(page, TITLE)).to_have_count(1)
    await expect(page.get_by_role("heading", name=TITLE)).to_be_visible()
    await expect(sidebar_row(page, TITLE).get_by_role("link")).to_have_attribute("aria-current", "page")

    second = await ask(page, "What does ef_search change?")
    await expect(second).to_contain_text("ef_search")
    # A follow-up is searched as a standalone question, and the answer says which.
    await expect(second).to_contain_text("Searched for: Standalone: What does ef_search change?")
    assert page.url == session_url

    # Stop mid-stream: the LLM hangs after three tokens, so the answer is being written.
    fake.behaviour = Behaviour(hang_after_tokens=3, affects={"answer"})
    box = page.get_by_label("Message", exact=True)
    await box.fill("A question that will be stopped")
    await box.press("Enter")
    await expect(answers(page).nth(2)).to_contain_text("According to the")
    await page.get_by_role("button", name="Stop").click()
    await expect(box).to_have_value("A question that will be stopped")
    await expect(answers(page)).to_have_count(2)
    await expect(thread(page)).not_to_contain_text("A question that will be stopped")
    await expect(page.get_by_role("button", name="Send")).to_be_visible()
    fake.reset()

    # Reload: the completed turns only, from the server.
    await page.reload()
    await expect(page.locator(".thread .msg")).to_have_count(4)
    await expect(thread(page)).to_contain_text("What is HNSW?")
    await expect(thread(page)).not_to_contain_text("will be stopped")

    # Rename inline: Escape cancels, Enter saves.
    row = sidebar_row(page, TITLE)
    await row.hover()
    await row.get_by_role("button", name=f"Rename “{TITLE}”").click()
    title_box = page.get_by_label("Chat title")
    await title_box.fill("Not this")
    await title_box.press("Escape")
    await expect(sidebar_row(page, TITLE)).to_have_count(1)
    await row.hover()
    await row.get_by_role("button", name=f"Rename “{TITLE}”").click()
    await page.get_by_label("Chat title").fill("Index notes")
    await page.get_by_label("Chat title").press("Enter")
    await expect(sidebar_row(page, "Index notes")).to_have_count(1)
    await expect(page.get_by_role("heading", name="Index notes")).to_be_visible()

    # Export: the conversation with its sources, saved under its title.
    row = sidebar_row(page, "Index notes")
    await row.hover()
    await page.screenshot(path="/tmp/shots/chat-session-actions.png")
    async with page.expect_download() as saving:
        await row.get_by_role("button", name="Export as Markdown “Index notes”").click()
    saved = await saving.value
    assert saved.suggested_filename == "Index notes.md"
    exported = await asyncio.to_thread(Path(await saved.path()).read_text)
    assert exported.startswith("# Index notes\n")
    assert exported.index("What is HNSW?") < exported.index("What does ef_search change?")
    assert "Sources:" in exported and "**hnsw.txt**" in exported

    # Archive: it leaves the list for the Archived section; unarchive brings it back.
    row = sidebar_row(page, "Index notes")
    await row.hover()
    await row.get_by_role("button", name="Archive “Index notes”").click()
    await expect(sidebar_row(page, "Index notes")).to_have_count(0)
    archived_row = sidebar_row(page, "Index notes", archived=True)
    await expect(archived_row).to_have_count(1)
    await archived_row.hover()
    await archived_row.get_by_role("button", name="Unarchive “Index notes”").click()
    await expect(sidebar_row(page, "Index notes")).to_have_count(1)
    await expect(sidebar_row(page, "Index notes", archived=True)).to_have_count(0)

    # Delete asks first; Cancel keeps it, Delete removes it and leaves for a new chat.
    row = sidebar_row(page, "Index notes")
    await row.hover()
    await row.get_by_role("button", name="Delete “Index notes”").click()
    await page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    await expect(sidebar_row(page, "Index notes")).to_have_count(1)
    await row.hover()
    await row.get_by_role("button", name="Delete “Index notes”").click()
    await page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    await expect(sidebar_row(page, "Index notes")).to_have_count(0)
    await expect(page).to_have_url(re.compile(r"#/chat$"))
    await expect(page.get_by_role("heading", name="New chat")).to_be_visible()

    # The deleted session's URL says so clearly, and back/forward still work.
    await page.goto(session_url)
    await expect(page.get_by_text("This chat does not exist")).to_be_visible()


async def test_a_citation_opens_its_passage(page: Page, documents: dict[str, str], fake: FakeLLM) -> None:
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await page.get_by_label("Search mode").select_option("bm25")
    answer = await ask(page, "How does pgvector build HNSW indexes with ef_construction?")
    await answer.get_by_role("button", name="Copy answer").click()
    await expect(answer.get_by_role("button", name="Copy answer")).to_have_text("Copied")
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("According to the sources, the answer to 'How does pgvector") and "[1]" in copied
    citation = answer.locator(".answer-body").get_by_role("button", name=re.compile(r"^Source 1: hnsw\.txt"))
    await citation.click()
    dialog = page.get_by_role("dialog", name=re.compile("hnsw.txt"))
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_label("Excerpt")).to_contain_text("ef_construction")
    await expect(dialog).to_contain_text("Score")
    link = dialog.get_by_role("link", name="Open document")
    await expect(link).to_have_attribute("href", f"#/documents/{documents['hnsw.txt']}")
    async with page.expect_download() as download_info:
        await dialog.get_by_role("button", name="Download").click()
    download = await download_info.value
    assert download.suggested_filename == "hnsw.txt"
    assert (await download.path()).read_text() == DOCS["hnsw.txt"]
    await page.keyboard.press("Escape")
    await expect(dialog).to_have_count(0)
    await expect(citation).to_be_focused()
    # The search mode chosen for the new chat is the session's: it survives a reload.
    await page.reload()
    await expect(page.get_by_label("Search mode")).to_have_value("bm25")


async def test_a_source_whose_document_was_deleted_says_so_on_its_chip(
    page: Page, stack: Stack, documents: dict[str, str], fake: FakeLLM
) -> None:
    """The chip in the answer's source list, not only the passage it opens: a reader scanning sources
    must not take a deleted document for a live one."""
    (doc_id,) = (
        await ingest(stack, {"walrus.txt": "Walrus tusks grow throughout the walrus's life."})
    ).values()
    await page.get_by_label("Search mode").select_option("bm25")
    answer = await ask(page, "How long do walrus tusks grow?")
    chip = answer.locator(".source-chip", has_text="walrus.txt")
    await expect(chip.locator(".deleted-source")).to_have_count(0)
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as client:
        assert (await client.delete(f"/documents/{doc_id}")).status_code == 204
    await page.reload()
    answer = answers(page).last
    await answer.locator(".sources summary").click()
    chip = answer.locator(".source-chip", has_text="walrus.txt")
    await expect(chip.locator(".deleted-source")).to_have_text("deleted")
    await chip.click()
    await expect(page.get_by_role("dialog")).to_contain_text("This document has since been deleted")


async def leave_and_reopen(page: Page, elsewhere: str, chat_url: str) -> None:
    """Another view, then the chat again. Each hash change is rendered when its event runs, from the hash
    of that moment: two gotos in a row could both render the chat (an update of the same view, not a
    reopening). Seen once in a full run."""
    await page.goto(elsewhere)
    await expect(page.locator(".view-chat")).to_have_count(0)
    await page.goto(chat_url)


async def test_a_chat_about_one_document_searches_it_alone(
    page: Page, stack: Stack, documents: dict[str, str], fake: FakeLLM
) -> None:
    """ "Ask about it" on a document's page: every question of the chat, after a reload or reopened from
    the list too, is answered from that document alone, the header says which, and × asks about every
    document again."""
    pasta = documents["pasta.txt"]
    await page.goto(f"{stack.base_url}/#/documents/{pasta}")
    await page.screenshot(path="/tmp/shots/document-page.png")
    await page.get_by_role("link", name="Search in it").click()
    await expect(page.get_by_label("Document")).to_have_value(pasta)
    await page.go_back()
    await page.get_by_role("link", name="Ask about it").click()
    scope = page.locator(".doc-scope")
    await expect(scope).to_contain_text("About pasta.txt")
    await expect(page.locator(".chat-empty")).to_contain_text("“pasta.txt” alone")

    async def sources(question: str) -> list[str]:
        answer = await ask(page, question)
        await expect(answer.locator(".source-chip").first).to_be_attached()
        return await answer.locator(".source-chip").all_text_contents()

    # About HNSW: without the limit, hnsw.txt would be its source.
    assert all("pasta.txt" in s for s in await sources("How does pgvector build HNSW indexes?"))
    await expect(page).to_have_url(re.compile(rf"#/chat/[0-9a-f-]{{36}}\?doc={pasta}$"))
    await page.reload()
    await expect(scope).to_contain_text("About pasta.txt")
    assert all("pasta.txt" in s for s in await sources("And what is ef_search?"))
    await page.screenshot(path="/tmp/shots/chat-about-a-document.png")
    # Opened where its link has no ?doc= (the list of chats, a bookmark): the last answer's limit holds.
    chat_url = page.url.split("?")[0]
    await leave_and_reopen(page, f"{stack.base_url}/#/documents", chat_url)
    await expect(scope).to_contain_text("About pasta.txt")
    await expect(page).to_have_url(re.compile(rf"\?doc={pasta}$"))
    # On a phone the header holds the title, the document and the mode without pushing the page sideways.
    size = page.viewport_size
    await page.set_viewport_size({"width": 375, "height": 740})
    await expect(scope).to_be_visible()
    await page.wait_for_timeout(600)  # the drawer slides shut when the layout turns narrow
    widths = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    await page.screenshot(path="/tmp/shots/chat-about-a-document-phone.png")
    assert widths[0] <= widths[1], widths
    assert size is not None
    await page.set_viewport_size(size)

    await page.get_by_role("button", name="Ask about every document").click()
    await expect(scope).to_be_hidden()
    await expect(page).to_have_url(SESSION_URL)
    assert any("hnsw.txt" in s for s in await sources("How does pgvector build HNSW indexes?"))
    # Its last answer was not limited: reopened, it stays about every document.
    await leave_and_reopen(page, f"{stack.base_url}/#/documents", chat_url)
    await expect(page.locator(".source-chip", has_text="hnsw.txt").first).to_be_attached()
    await expect(scope).to_be_hidden()
    await expect(page).to_have_url(SESSION_URL)


async def test_a_question_sent_before_the_document_is_looked_up_waits_for_its_limit(
    page: Page, stack: Stack, documents: dict[str, str], fake: FakeLLM
) -> None:
    """The chat's document is looked up (GET /documents/<id>) when it opens; a question sent while that
    answer is held back goes out limited to the document once it comes, never unlimited before."""
    pasta = documents["pasta.txt"]
    release = asyncio.Event()

    async def hold(route: Route) -> None:
        await release.wait()
        await route.continue_()

    await page.route(f"**/documents/{pasta}", hold)
    await page.goto(f"{stack.base_url}/#/chat?doc={pasta}")
    box = page.get_by_label("Message", exact=True)
    await box.fill("How does pgvector build HNSW indexes?")
    sent: list[Request] = []
    page.on("request", lambda r: sent.append(r) if r.url.endswith("/query/stream") else None)
    await box.press("Enter")
    await page.wait_for_timeout(500)  # time for a question that did not wait to go out
    assert sent == []
    release.set()
    answer = answers(page).first
    await expect(answer.get_by_role("button", name="Copy answer")).to_be_visible(timeout=60_000)
    [query] = sent
    body = query.post_data_json
    assert body["filters"] == {"document_ids": [pasta]}, body
    assert all("pasta.txt" in s for s in await answer.locator(".source-chip").all_text_contents())


async def test_injected_markup_stays_inert_text(page: Page, documents: dict[str, str], fake: FakeLLM) -> None:
    image = '<img src=x onerror="window.__pwned=1">'
    link = "[click](javascript:window.__pwned=1)"
    script = "<script>window.__pwned=1</script>"
    await page.get_by_label("Search mode").select_option("bm25")
    answer = await ask(page, f"{link} {image} quokka {script}")
    # The answer quotes the question (its first 80 characters): markup and link stay literal text.
    body = answer.locator(".answer-body")
    await expect(body).to_contain_text(f"{link} {image}")
    await expect(thread(page).locator(".msg-user")).to_contain_text(f"{link} {image} quokka {script}")
    await body.get_by_role("button", name=re.compile(r"^Source 1: quokka\.txt")).click()
    excerpt = page.get_by_role("dialog").get_by_label("Excerpt")
    await expect(excerpt).to_contain_text(script)
    await expect(excerpt).to_contain_text(image)
    await expect(excerpt).to_contain_text(link)
    for selector in ("img", "script", "iframe", 'a[href^="javascript"]'):
        assert await page.locator(f".view-chat {selector}, dialog {selector}").count() == 0, selector
    assert await page.evaluate("typeof window.__pwned") == "undefined"


async def test_the_fallback_note_when_the_llm_fails(
    page: Page, documents: dict[str, str], fake: FakeLLM
) -> None:
    fake.behaviour = Behaviour(fail_status=500, affects={"answer"})
    answer = await ask(page, "How do I cook pasta?")
    await expect(answer.get_by_role("note")).to_contain_text("The LLM failed")
    await expect(answer.get_by_text("Extractive answer", exact=True)).to_be_visible()
    # The extractive answer is a markdown list whose items cite their passages.
    await expect(answer.locator(".answer-body li").first.locator(".cite")).to_have_count(1)
    await page.reload()
    await expect(answers(page).first.get_by_role("note")).to_contain_text("The LLM failed")


async def test_an_answer_slow_to_its_first_token_arrives_whole_past_the_keepalives(
    page: Page, documents: dict[str, str], fake: FakeLLM
) -> None:
    # Longer than RAG_STREAM_KEEPALIVE_S (2.5 s): the stream carries `: keep-alive` comments before the
    # first token, which the app's reader (api.js streamEvents) must skip.
    fake.behaviour = Behaviour(delay_s=3.5, affects={"answer"})
    async with page.expect_response(lambda r: r.url.endswith("/query/stream")) as streamed:
        answer = await ask(page, "What is BM25?")
    assert b"\n: keep-alive\n\n" in await (await streamed.value).body()
    await expect(answer).to_contain_text("the answer to 'What is BM25?' is grounded")
    await expect(answer.get_by_role("note")).to_have_count(0)  # no fallback: the LLM's own answer


async def test_a_temporary_chat_is_answered_but_not_listed(
    page: Page, stack: Stack, documents: dict[str, str], fake: FakeLLM
) -> None:
    await page.get_by_role("switch", name="Temporary chat").check()
    await expect(page.get_by_role("heading", name="Temporary chat")).to_be_visible()
    answer = await ask(page, "A temporary question about pasta")
    await expect(answer).to_contain_text("A temporary question about pasta")
    await expect(page).to_have_url(SESSION_URL)
    await expect(page.locator(".temp-badge")).to_be_visible()
    session_id = page.url.rsplit("/", 1)[1]
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as client:
        listed = (
            await client.get("/chat/sessions", params={"include_archived": "true", "limit": 200})
        ).json()
        session = (await client.get(f"/chat/sessions/{session_id}")).json()
    assert session["is_temporary"] is True
    assert session_id not in [s["id"] for s in listed["sessions"]]
    await expect(page.locator(f'.session-item[data-id="{session_id}"]')).to_have_count(0)
    # Switching it off starts a stored chat again.
    await page.get_by_role("switch", name="Temporary chat").uncheck()
    await expect(page.get_by_role("heading", name="Ask about your documents")).to_be_visible()
    await expect(page).to_have_url(re.compile(r"#/chat$"))


async def test_keyboard_only(page: Page, documents: dict[str, str], fake: FakeLLM) -> None:
    await page.goto(page.url.split("#")[0] + "#/chat")
    await expect(page.get_by_role("heading", name="Ask about your documents")).to_be_visible()
    for _ in range(100):  # past the header, the sidebar's search box and its chats (each with its buttons)
        if await page.evaluate("document.activeElement?.id") == "chat-message":
            break
        await page.keyboard.press("Tab")
    await expect(page.get_by_label("Message", exact=True)).to_be_focused()
    await page.keyboard.type("What is HNSW?")
    await page.keyboard.press("Enter")
    await expect(answers(page).first.get_by_role("button", name="Copy answer")).to_be_visible(timeout=60_000)
    # The answer sits just above the message box: Shift+Tab walks back into it to the citation.
    for _ in range(15):
        if await page.evaluate("document.activeElement?.classList.contains('cite')"):
            break
        await page.keyboard.press("Shift+Tab")
    citation = answers(page).first.locator(".answer-body .cite").first
    await expect(citation).to_be_focused()
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    await expect(dialog.get_by_label("Excerpt")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(dialog).to_have_count(0)
    await expect(citation).to_be_focused()


async def test_unknown_session_in_the_url(
    page: Page, page_console: Console, documents: dict[str, str], fake: FakeLLM
) -> None:
    page_console.allow("404")
    await page.goto(page.url.split("#")[0] + "#/chat/00000000-0000-4000-8000-000000000000")
    await expect(page.get_by_text("This chat does not exist")).to_be_visible()
    await page.get_by_role("link", name="Start a new chat").click()
    await expect(page.get_by_role("heading", name="Ask about your documents")).to_be_visible()
    # A question asked on a missing chat's page starts a new chat.
    await page.go_back()
    await expect(page.get_by_text("This chat does not exist")).to_be_visible()
    await ask(page, "What is HNSW?")
    await expect(page).to_have_url(SESSION_URL)
    assert "00000000-0000-4000-8000-000000000000" not in page.url


async def test_sessions_are_paged(page: Page, stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as client:
        for i in range(32):
            response = await client.post("/chat/sessions", json={"title": f"Paged chat {i:02d}"})
            assert response.status_code == 201
    await page.reload()
    chats = page.get_by_role("list", name="Chats", exact=True)
    await expect(chats.locator(".session-item").first).to_contain_text("Paged chat 31")
    await expect(chats.locator(".session-item")).to_have_count(30)
    await page.get_by_role("button", name="Load more").click()
    await expect(chats.locator(".session-item", has_text="Paged chat 00")).to_have_count(1)


async def test_a_small_screen_uses_a_drawer(
    browser: Browser, stack: Stack, documents: dict[str, str], page_console: Console, fake: FakeLLM
) -> None:
    page = await new_page(
        browser,
        page_console,
        viewport={"width": 375, "height": 740},
        color_scheme="dark",
        reduced_motion="reduce",
    )
    await sign_in(page, stack.base_url, stack.admin_key)
    await ask(page, "How do I cook pasta al dente?")
    await expect(page.get_by_role("button", name="New chat")).not_to_be_visible()
    await page.get_by_role("button", name="Show chats").click()
    await expect(page.get_by_role("button", name="New chat")).to_be_visible()
    await page.screenshot(path="/tmp/chatshots/narrow-drawer.png")
    await page.get_by_role("button", name="New chat").click()
    await expect(page.get_by_role("button", name="New chat")).not_to_be_visible()
    await page.get_by_role("button", name="Show chats").click()
    await sidebar_row(page, TITLE).first.get_by_role("link").click()
    await expect(page.get_by_role("button", name="New chat")).not_to_be_visible()
    await expect(thread(page)).to_contain_text("cook pasta al dente")
    await page.screenshot(path="/tmp/chatshots/narrow.png")
    await page.context.close()
    assert not page_console.unexpected()


async def test_a_long_conversation_renders_once_and_streams_only_the_last_answer(
    page: Page, stack: Stack, documents: dict[str, str], fake: FakeLLM
) -> None:
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as client:
        created = await client.post("/chat/sessions", json={"title": "A long conversation"})
        session_id = created.json()["id"]
        for i in range(100):
            response = await client.post(
                "/query", json={"query": f"Question number {i}", "session_id": session_id}
            )
            assert response.status_code == 200, response.text
    await page.goto(page.url.split("#")[0] + f"#/chat/{session_id}")
    messages = page.locator(".thread .msg")
    await expect(messages).to_have_count(200)
    await expect(messages.last).to_be_in_viewport()
    # Streaming the next answer redraws that answer alone: every earlier message stays the same node.
    await page.evaluate("document.querySelectorAll('.thread .msg').forEach((m) => (m.dataset.kept = '1'))")
    await ask(page, "Question number 100")
    await expect(messages).to_have_count(202)
    await expect(page.locator(".thread .msg[data-kept]")).to_have_count(200)


async def test_stopping_the_first_answer_of_a_new_chat_leaves_no_chat(
    page: Page, stack: Stack, documents: dict[str, str], fake: FakeLLM
) -> None:
    fake.behaviour = Behaviour(hang_after_tokens=2, affects={"answer"})
    box = page.get_by_label("Message", exact=True)
    await box.fill("An unfinished first question")
    await box.press("Enter")
    await expect(answers(page).first).to_contain_text("According")
    await expect(page).to_have_url(SESSION_URL)  # the id the sources event named
    await page.get_by_role("button", name="Stop").click()
    await expect(page).to_have_url(re.compile(r"#/chat$"))
    await expect(box).to_have_value("An unfinished first question")
    await expect(page.get_by_role("heading", name="Ask about your documents")).to_be_visible()
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as client:
        listed = (await client.get("/chat/sessions", params={"limit": 200})).json()
    assert not [s for s in listed["sessions"] if s["message_count"] == 0 and s["title"] is None]
    # Sent again, it is answered and becomes a chat.
    fake.reset()
    await box.press("Enter")
    await expect(answers(page).first.get_by_role("button", name="Copy answer")).to_be_visible()
    await expect(page).to_have_url(SESSION_URL)


async def test_back_and_forward_move_between_chats(page: Page, stack: Stack, fake: FakeLLM) -> None:
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    ids = []
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as client:
        for question in ("First history question", "Second history question"):
            response = await client.post("/query", json={"query": question})
            assert response.status_code == 200, response.text
            ids.append(response.json()["session_id"])
            await client.patch(f"/chat/sessions/{ids[-1]}", json={"title": question})
    await page.reload()
    await sidebar_row(page, "First history question").get_by_role("link").click()
    await expect(thread(page)).to_contain_text("First history question")
    await sidebar_row(page, "Second history question").get_by_role("link").click()
    await expect(thread(page)).to_contain_text("Second history question")
    await page.go_back()
    await expect(thread(page)).to_contain_text("First history question")
    await expect(sidebar_row(page, "First history question").get_by_role("link")).to_have_attribute(
        "aria-current", "page"
    )
    await page.go_forward()
    await expect(thread(page)).to_contain_text("Second history question")
    assert page.url.endswith(f"#/chat/{ids[1]}")


MARKDOWN_PROBE = """
async (text) => {
  const { renderMarkdown } = await import('/assets/markdown.js');
  const cited = [];
  const citation = (n) => {
    if (n > 2) return null;
    cited.push(n);
    const b = document.createElement('button');
    b.textContent = `#${n}`;
    return b;
  };
  const box = document.createElement('div');
  box.append(renderMarkdown(text, { citation }));
  const tags = [...box.querySelectorAll('*')].map((e) => e.tagName.toLowerCase());
  const links = [...box.querySelectorAll('a')].map((a) => [a.getAttribute('href'), a.rel, a.textContent]);
  return { tags, links, cited, text: box.textContent, xml: new XMLSerializer().serializeToString(box) };
}
"""


async def test_markdown_builds_nodes_and_keeps_html_literal(page: Page) -> None:
    text = (
        "## Title\n\nSome **bold**, *em*, `code <b>` and ~~old~~ text [1][2] and [3].\n"
        "Second line\n\n"
        "- one\n- two\n  - nested\n\n"
        "1. first\n2. second\n\n"
        "> quoted\n\n"
        "```python\nprint('<script>')\n```\n\n"
        "[safe](https://example.org/a) [bad](javascript:alert(1)) <img src=x onerror=alert(1)> "
        "snake_case_name and https://example.com/x."
    )
    result = await page.evaluate(MARKDOWN_PROBE, text)
    tags = result["tags"]
    for tag in (
        "h4",
        "strong",
        "em",
        "code",
        "del",
        "br",
        "ul",
        "ol",
        "li",
        "blockquote",
        "pre",
        "a",
        "button",
    ):
        assert tag in tags, tag
    assert "img" not in tags and "script" not in tags and "b" not in tags
    assert result["cited"] == [1, 2]  # [3] has no source: it stays text
    assert "[3]" in result["text"]
    assert ["https://example.org/a", "noopener noreferrer", "safe"] in result["links"]
    assert ["https://example.com/x", "noopener noreferrer", "https://example.com/x"] in result["links"]
    assert all(not (href or "").startswith("javascript") for href, _, _ in result["links"])
    assert "[bad](javascript:alert(1))" in result["text"]
    assert "<img src=x onerror=alert(1)>" in result["text"]
    assert "print('<script>')" in result["text"]
    assert "snake_case_name" in result["text"]
    assert tags.count("ul") == 2  # the nested list


async def test_markdown_reads_code_spans_as_the_citation_filter_does(page: Page) -> None:
    """A span is code up to CODE_SPAN_MAX characters (chat/citations.py drops no [n] inside one); a
    longer run between backticks is text, where [n] is a citation, as the filter treats it."""
    long = "w " * (CODE_SPAN_MAX // 2)
    result = await page.evaluate(MARKDOWN_PROBE, f"Use `rows[2]` here, and `{long}[1]` there.")
    assert result["tags"].count("code") == 1
    assert result["cited"] == [1]
    assert "rows[2]" in result["text"]


async def test_after_a_chat_is_deleted_or_archived_the_focus_stays_in_the_list(
    page: Page, documents: dict[str, str], fake: FakeLLM
) -> None:
    """The removed row took the keyboard focus with it: the next Tab started over at the top of the page."""
    for question in ("What is HNSW?", "How do I cook pasta?", "Where do quokkas live?"):
        await page.get_by_role("button", name="New chat").click()
        # The new chat's empty thread first: `ask` counts the answers shown to know which one is new.
        await expect(answers(page)).to_have_count(0)
        await ask(page, question)
    rows = page.get_by_role("list", name="Chats", exact=True).locator(".session-item")
    chats = rows.locator(".session-link")
    await expect(rows.first).to_have_attribute("data-id", page.url.rsplit("/", 1)[1])
    second, third = await rows.nth(1).get_attribute("data-id"), await rows.nth(2).get_attribute("data-id")

    await chats.nth(0).focus()
    await page.keyboard.press("Tab")  # Rename
    await page.keyboard.press("Tab")  # Export
    await page.keyboard.press("Tab")  # Archive
    await page.keyboard.press("Tab")  # Delete
    await page.keyboard.press("Enter")
    await page.get_by_role("dialog").get_by_role("button", name="Delete").focus()
    await page.keyboard.press("Enter")
    await expect(rows.nth(0)).to_have_attribute("data-id", second or "")
    await expect(chats.nth(0)).to_be_focused()

    await page.keyboard.press("Tab")  # Rename
    await page.keyboard.press("Tab")  # Export
    await page.keyboard.press("Tab")  # Archive
    await page.keyboard.press("Enter")
    await expect(rows.nth(0)).to_have_attribute("data-id", third or "")
    await expect(chats.nth(0)).to_be_focused()


async def test_the_message_box_and_an_unanswered_question_survive_a_reload(
    page: Page, page_console: Console, documents: dict[str, str], fake: FakeLLM
) -> None:
    """A reload, or another view, mid-answer lost the question (the server stores nothing for it) and
    whatever was typed meanwhile; a reload lost a draft too."""
    page_console.allow("404")  # the reload opens the id the unanswered turn's sources named
    await page.get_by_role("link", name="Chat", exact=True).click()
    box = page.get_by_label("Message", exact=True)
    await box.fill("A thought half written")
    await page.reload()
    await expect(box).to_have_value("A thought half written")

    fake.behaviour = Behaviour(hang_after_tokens=2, affects={"answer"})
    await box.press("Enter")
    await expect(answers(page).first).to_contain_text("According")
    await box.fill("and a second line")
    await page.reload()
    await expect(box).to_have_value("A thought half written\nand a second line")

    await page.goto(page.url.split("#")[0] + "#/chat")
    await box.fill("Keep me")
    await box.press("Enter")
    await expect(answers(page).first).to_contain_text("According")
    await page.get_by_role("link", name="Search", exact=True).click()  # another view mid-answer
    await page.get_by_role("link", name="Chat", exact=True).click()
    await expect(box).to_have_value("Keep me")

    fake.reset()
    await box.press("Enter")
    await expect(answers(page).first.get_by_role("button", name="Copy answer")).to_be_visible()
    await expect(box).to_have_value("")
    await page.reload()
    await expect(box).to_have_value("")  # answered: nothing is kept


async def test_a_follow_up_in_a_chat_deleted_in_another_tab_can_start_a_new_one(
    page: Page, stack: Stack, page_console: Console, documents: dict[str, str], fake: FakeLLM
) -> None:
    """It said "chat session 3f2a… not found" and stayed on the deleted chat, where every send failed."""
    page_console.allow("404")
    await page.get_by_role("link", name="Chat", exact=True).click()
    await ask(page, "What is HNSW?")
    session_id = page.url.rsplit("/", 1)[-1]
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as client:
        assert (await client.delete(f"/chat/sessions/{session_id}")).status_code == 204
    box = page.get_by_label("Message", exact=True)
    await box.fill("And what does ef_search change?")
    await box.press("Enter")
    await expect(page.get_by_role("alert")).to_contain_text("This chat no longer exists")
    await expect(box).to_have_value("And what does ef_search change?")
    await expect(page).to_have_url(re.compile(r"#/chat$"))
    await box.press("Enter")
    await expect(answers(page).first.get_by_role("button", name="Copy answer")).to_be_visible()
    assert session_id not in page.url


async def test_renaming_an_older_chat_leaves_it_in_its_place(page: Page, stack: Stack) -> None:
    """The list is by last activity: a rename is an edit, not activity (it moved the chat to the top)."""
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as client:
        for title in ("Older chat", "Newer chat"):
            assert (await client.post("/chat/sessions", json={"title": title})).status_code == 201
    await page.goto(stack.base_url + "/#/chat")
    await page.reload()
    rows = page.get_by_role("list", name="Chats", exact=True).locator(".session-item .session-title")
    await expect(rows.nth(0)).to_have_text("Newer chat")
    await expect(rows.nth(1)).to_have_text("Older chat")
    row = sidebar_row(page, "Older chat")
    await row.hover()
    await row.get_by_role("button", name="Rename “Older chat”").click()
    await page.get_by_label("Chat title").fill("Older, renamed")
    await page.get_by_label("Chat title").press("Enter")
    await expect(rows.nth(1)).to_have_text("Older, renamed")
    await expect(rows.nth(0)).to_have_text("Newer chat")
