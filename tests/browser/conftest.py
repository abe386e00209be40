"""Browser tests: Debian's Chromium driven by Playwright against a real stack (`rag-server serve` and
`rag-server worker` subprocesses on a fresh embedded database, a fake OpenAI-compatible LLM server).

Chromium comes from the system (`apt-get install -y chromium`; Playwright's own download does not work on
these machines); without it the tests fail with that sentence, never skip. Every page collects the
browser console: an error there fails the test unless the test allowed it (`page_console.allow(...)`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

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
    return Stack(server.base_url, ADMIN_KEY, llm, env, server, worker)


@pytest.fixture(scope="module")
def stack(database_url: str, data_dir: Path, fake_llm: FakeLLM) -> Iterator[Stack]:
    """The server and a worker on this module's database, an admin key installed, the fake LLM answering."""
    running = start_stack(database_url, data_dir, fake_llm)
    yield running
    running.worker.stop()
    running.server.stop()


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
