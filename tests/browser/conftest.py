"""Browser tests: Debian's Chromium driven by Playwright against a real stack (`rag-server serve` and
`rag-server worker` subprocesses on an embedded database, a fake OpenAI-compatible LLM server): one per
pytest process, its database emptied before each module (`reset_stack`).

Chromium comes from the system (`apt-get install -y chromium`; Playwright's own download does not work on
these machines); without it the tests fail with that sentence, never skip. Every page collects the
browser console: an error there fails the test unless the test allowed it (`page_console.allow(...)`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from rag_server.access.keys import ensure_bootstrap_key
from rag_server.collections.models import DEFAULT_COLLECTION, DEFAULT_COLLECTION_ID
from tests.conftest import create_database
from tests.fakes.llm_server import FakeLLM
from tests.support.processes import Proc, process_env, start_server, start_worker

HERE = Path(__file__).parent
ADMIN_KEY = "rag_browser_tests_admin_key_0123456789abcdef"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.browser)


def chromium_path() -> str:
    configured = os.environ.get("RAG_TEST_CHROMIUM")
    for candidate in (configured, *CHROMIUM_CANDIDATES):
        if candidate and Path(candidate).exists():
            return candidate
    found = shutil.which("chromium")
    if found:
        return found
    pytest.fail(
        "The browser tests need Chromium: install it with `sudo apt-get install -y chromium` "
        "(Debian/Ubuntu), or point RAG_TEST_CHROMIUM at a Chromium or Chrome binary.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_path()
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=executable)
        yield instance
        await instance.close()


@dataclass
class Stack:
    base_url: str
    admin_key: str
    llm: FakeLLM | None
    env: dict[str, str]
    server: Proc
    worker: Proc
    database_url: str
    data_dir: Path


def _stack_env(database_url: str, data_dir: Path, llm: FakeLLM | None) -> dict[str, str]:
    # Chat's floor under its sources is off: the tests' follow-ups, condensed by the fake LLM into
    # "Standalone: ...", resemble no passage (the floor: tests/integration/test_search_floor.py).
    # Keep-alives on (off by default): the chat's reader must skip them (test_chat.py).
    extra = {
        "RAG_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "RAG_CHAT_MIN_SIMILARITY": "-1",
        "RAG_STREAM_KEEPALIVE_S": "2.5",
    }
    if llm is not None:
        extra.update(
            {"RAG_LLM_PROVIDER": "openai", "RAG_LLM_BASE_URL": llm.base_url, "RAG_LLM_MODEL": "fake-llm"}
        )
    return process_env(database_url, data_dir, **extra)


def start_stack(database_url: str, data_dir: Path, llm: FakeLLM | None) -> Stack:
    env = _stack_env(database_url, data_dir, llm)
    server = start_server(env, data_dir / "server.log")
    worker = start_worker(env, data_dir / "worker.log")
    assert server.base_url
    return Stack(server.base_url, ADMIN_KEY, llm, env, server, worker, database_url, data_dir)


def stop_stack(stack: Stack) -> None:
    stack.worker.stop()
    stack.server.stop()


@pytest.fixture(scope="session")
async def shared_stack(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """One server, worker and fake LLM per pytest process, for every module that takes `stack`: their
    start (~10 s of CPU) was most of a small module's cost. Each module still starts on an empty
    database (`stack` resets it)."""
    llm = FakeLLM().start()
    database_url = await create_database(pg_server, "browser")
    running = start_stack(database_url, tmp_path_factory.mktemp("browser-stack"), llm)
    yield running
    stop_stack(running)
    llm.stop()


@pytest.fixture(scope="module")
async def stack(shared_stack: Stack) -> Stack:
    """The server and a worker on an empty database (an admin key installed), the fake LLM answering."""
    await reset_stack(shared_stack)
    return shared_stack


@pytest.fixture(scope="module")
def fake_llm(stack: Stack) -> FakeLLM:
    """The stack's fake LLM, its script and log emptied with the stack."""
    assert stack.llm is not None, "this module's own stack has no LLM"
    return stack.llm


async def reset_stack(stack: Stack) -> None:
    """The stack as just started: a module's documents, collections, keys, chats, tasks and queued
    messages gone, the default collection and the admin key back, a worker running (a module's test may
    have stopped it), the fake LLM's script reset."""
    if stack.server.popen.poll() is not None:
        stack.server = start_server(stack.env, stack.data_dir / "server.log")
        assert stack.server.base_url
        stack.base_url = stack.server.base_url
    if stack.worker.popen.poll() is not None:
        stack.worker = start_worker(stack.env, stack.data_dir / "worker.log")
    conn = await asyncpg.connect(stack.database_url)
    try:
        # A task the module left processing ends first: its final write and the TRUNCATE lock the same
        # tables in another order. One taken up meanwhile: the TRUNCATE gives way and is tried again.
        for attempt in range(10):
            await _wait_until_nothing_processes(conn)
            try:
                await _empty(conn)
                break
            except (asyncpg.DeadlockDetectedError, asyncpg.LockNotAvailableError):
                if attempt == 9:
                    raise
    finally:
        await conn.close()
    if stack.llm is not None:
        stack.llm.reset()


async def _wait_until_nothing_processes(conn: asyncpg.Connection, timeout_s: float = 30) -> None:
    """Until no task is processing, or `timeout_s` (one whose worker was killed holds no lock)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not await conn.fetchval("SELECT count(*) FROM job_tasks WHERE status = 'processing'"):
            return
        await asyncio.sleep(0.2)


async def _empty(conn: asyncpg.Connection) -> None:
    """Every table a module writes emptied, as at the server's first start, in one transaction."""
    async with conn.transaction():
        await conn.execute("SET LOCAL lock_timeout = '5s'")
        # TRUNCATE, not DELETE: the chunks' triggers empty the BM25 postings and statistics with them.
        await conn.execute(
            "TRUNCATE chunks, documents, document_files, job_batches, job_tasks, chat_sessions,"
            " chat_messages, v1_responses, api_keys CASCADE"
        )
        await conn.execute("DELETE FROM collections WHERE id <> $1", DEFAULT_COLLECTION_ID)
        await conn.execute(
            "INSERT INTO collections (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE"
            " SET name = excluded.name, description = '', hybrid_alpha = NULL",
            DEFAULT_COLLECTION_ID,
            DEFAULT_COLLECTION,
        )
        await conn.execute("SELECT pgmq.purge_queue(queue_name) FROM pgmq.meta")
        await ensure_bootstrap_key(conn, ADMIN_KEY)


@dataclass
class Console:
    """The browser console of one page: errors fail the test unless a test allowed them."""

    errors: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)

    def allow(self, substring: str) -> None:
        self.allowed.append(substring)

    def record(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in self.allowed)]


@pytest.fixture
def page_console() -> Console:
    return Console()


async def new_page(browser: Browser, console: Console, **context_options: object) -> Page:
    context = await browser.new_context(**context_options)  # type: ignore[arg-type]
    page = await context.new_page()
    page.on("console", console.record)
    page.on("pageerror", lambda exc: console.errors.append(f"uncaught: {exc}"))
    return page


async def sign_in(page: Page, base_url: str, key: str) -> None:
    """Open the app and sign in through its form, as a person does."""
    await page.goto(base_url + "/")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("navigation", name="Main").wait_for()


@pytest.fixture
async def page(browser: Browser, stack: Stack, page_console: Console) -> AsyncIterator[Page]:
    """A fresh browser tab (its own sessionStorage), signed in with the admin key."""
    tab = await new_page(browser, page_console, viewport={"width": 1280, "height": 860})
    try:
        await sign_in(tab, stack.base_url, stack.admin_key)
    except Exception as exc:
        # CI prints no server log: say whether the server still runs, and what it last wrote.
        raise AssertionError(
            f"sign-in failed; server exit code {stack.server.popen.poll()}; its log ends:\n"
            f"{stack.server.log_tail()}"
        ) from exc
    yield tab
    await tab.context.close()
    assert not page_console.unexpected(), f"browser console errors: {page_console.unexpected()}"
