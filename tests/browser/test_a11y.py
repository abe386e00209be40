"""Accessibility of the web app: axe-core (the PyPI package axe-playwright-python ships its JavaScript, no
Node) finds no critical or serious violation on any main view, light and dark, at a desktop's and a
phone's width; and a person with a keyboard alone signs in, switches the collection, uploads, searches,
opens a result, asks a question and opens a citation.

`RAG_A11Y_REPORT=path.json` writes every violation found (all impacts) to that file: the audit's list.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import Console, Stack, new_page, sign_in
from tests.browser.seed import bearer, upload_and_wait
from tests.support.sample_files import pptx_bytes

FILES = {
    "lighthouses.md": b"# Lighthouses\n\nA Fresnel lens focuses the lamp's light into a beam visible "
    b"for more than twenty nautical miles. Augustin Fresnel designed it in 1822 for French lighthouses.",
    "coast/tides.txt": b"Tides are caused by the Moon's gravity pulling on the oceans. Spring tides happen "
    b"at new and full moon, when Sun and Moon line up.",
    "lighthouse-deck.pptx": pptx_bytes(
        [
            {"title": "Lighthouse keepers", "body": "Keepers trimmed the wicks and wound the clockwork."},
            {"title": "Optics", "body": "The Fresnel lens beam turns once a minute.", "notes": "1822."},
        ]
    ),
}
QUESTION = "How far can a lighthouse beam be seen?"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 812}
# What this suite refuses; "moderate" and "minor" are reported (RAG_A11Y_REPORT), not failed.
BLOCKING = {"critical", "serious"}
AXE = Axe()


@pytest.fixture(scope="module")
async def documents(stack: Stack) -> dict[str, dict[str, Any]]:
    tasks = await upload_and_wait(stack, FILES)
    assert {t["status"] for t in tasks.values()} == {"completed"}, tasks
    return tasks


class Audit:
    """The violations of each view checked, by the view's name."""

    def __init__(self, page: Page, label: str) -> None:
        self.page = page
        self.label = label
        self.found: dict[str, list[dict[str, Any]]] = {}
        self.unsure: dict[str, list[dict[str, Any]]] = {}

    async def check(self, view: str) -> None:
        await self.page.wait_for_load_state("networkidle")
        results = await AXE.run(self.page)
        self.found[f"{self.label} {view}"] = results.response["violations"]
        self.unsure[f"{self.label} {view}"] = results.response["incomplete"]

    def blocking(self) -> list[str]:
        return [
            f"{view}: {v['id']} ({v['impact']}) {v['help']} at "
            + "; ".join(", ".join(map(str, node["target"])) for node in v["nodes"])
            for view, violations in self.found.items()
            for v in violations
            if v["impact"] in BLOCKING
        ]

    def report(self) -> None:
        path = os.environ.get("RAG_A11Y_REPORT")
        if not path:
            return
        report = Path(path)
        known = json.loads(report.read_text()) if report.exists() else {}
        for view, violations in [
            *self.found.items(),
            *((f"{v} (incomplete)", i) for v, i in self.unsure.items()),
        ]:
            known[view] = [
                {
                    "id": v["id"],
                    "impact": v["impact"],
                    "help": v["help"],
                    "targets": [node["target"] for node in v["nodes"]],
                    "summaries": sorted({node.get("failureSummary", "") for node in v["nodes"]}),
                }
                for v in violations
            ]
        report.write_text(json.dumps(known, indent=1))


async def walk_views(audit: Audit, stack: Stack, phone: bool) -> None:
    """Every main view, in the state a person sees it: seeded, with an answer, results, a panel open."""
    page = audit.page
    await page.goto(stack.base_url + "/")
    await page.get_by_label("API key").wait_for()
    await audit.check("sign-in")
    await sign_in(page, stack.base_url, stack.admin_key)

    box = page.get_by_label("Message", exact=True)
    await box.fill(QUESTION)
    await box.press("Enter")
    citation = page.locator(".answer-body .cite").first
    await expect(page.get_by_role("button", name="Copy answer")).to_be_visible(timeout=60_000)
    await page.locator(".sources summary").click()  # the cited and the retrieved-only sources
    await expect(page.locator(".source-chip.uncited").first).to_be_visible()
    await audit.check("chat with an answer")
    await citation.click()
    await expect(page.get_by_role("dialog")).to_be_visible()
    await audit.check("chat's source dialog")
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog")).to_have_count(0)
    if phone:
        await page.get_by_role("button", name="Show chats").click()
        await expect(page.get_by_role("button", name="New chat")).to_be_visible()
        await audit.check("chat's drawer")
        await page.keyboard.press("Escape")

    await page.goto(stack.base_url + "/#/documents")
    await page.get_by_role("link", name="lighthouses.md").first.wait_for()
    await audit.check("documents")
    await page.get_by_label("Select lighthouses.md").check()
    await page.get_by_role("button", name="Delete selected").click()
    await expect(page.get_by_role("dialog", name="Confirm")).to_be_visible()
    await audit.check("documents' confirm dialog")
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog")).to_have_count(0)
    await page.get_by_role("button", name="Upload", exact=True).click()
    await expect(page.get_by_role("heading", name="Upload to default")).to_be_visible()
    await audit.check("upload panel")

    await page.get_by_role("link", name="lighthouse-deck.pptx").first.click()
    await page.locator(".chunk").first.wait_for()
    await audit.check("document")

    await page.goto(stack.base_url + "/#/search?q=Fresnel+lens+beam&mode=hybrid")
    await page.get_by_label("Time per stage").wait_for()
    await audit.check("search with results")

    await page.goto(stack.base_url + "/#/status")
    await page.get_by_text("BM25 engine").wait_for()
    await audit.check("status")

    await page.goto(stack.base_url + "/#/admin")
    await page.locator('.admin-table tr[data-name="default"]').wait_for()
    await audit.check("admin")
    await page.get_by_role("button", name="Edit default").click()
    await expect(page.get_by_role("dialog", name="Edit default")).to_be_visible()
    await audit.check("admin's edit dialog")
    await page.keyboard.press("Escape")

    await page.get_by_role("link", name="Tasks", exact=True).click()
    await page.locator('.tasks-table tr[data-name="lighthouses.md"]').wait_for()
    await audit.check("admin's tasks")


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", ["desktop", "phone"])
async def test_no_critical_or_serious_axe_violation_on_any_view(
    browser: Browser,
    stack: Stack,
    documents: dict[str, dict[str, Any]],
    page_console: Console,
    scheme: str,
    width: str,
) -> None:
    viewport = PHONE if width == "phone" else DESKTOP
    page = await new_page(browser, page_console, viewport=viewport, color_scheme=scheme)
    audit = Audit(page, f"{width} {scheme}")
    try:
        await walk_views(audit, stack, phone=width == "phone")
    finally:
        audit.report()
        await page.context.close()
    blocking = audit.blocking()
    assert not blocking, "critical or serious axe violations:\n" + "\n".join(blocking)
    assert not page_console.unexpected(), page_console.unexpected()


# The keyboard alone: Tab and Shift+Tab move, Enter acts, Escape closes, arrows pick in a <select>.
MAX_TABS = 80
# The focused element, and whether it shows that it has the focus: an outline of its own, of its label
# (a visually hidden file input's button-like label) or of the box drawn around it (the chat's message box).
FOCUS = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return {html: "<body>", shown: false};
  const ringed = (node) => {
    if (!node) return false;
    const style = getComputedStyle(node);
    return style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 1;
  };
  const shown = [el, el.labels?.[0], el.parentElement].some(ringed);
  return {html: el.outerHTML.slice(0, 160), shown};
}"""


async def tab_to(page: Page, selector: str, backwards: bool = False) -> None:
    """Tab (or Shift+Tab) until the element matching `selector` has the focus, which it must show."""
    key = "Shift+Tab" if backwards else "Tab"
    for _ in range(MAX_TABS):
        if await page.evaluate("s => document.activeElement?.matches(s) ?? false", selector):
            focus = await page.evaluate(FOCUS)
            assert focus["shown"], (
                f"{selector} has the keyboard focus but shows no focus ring: {focus['html']}"
            )
            return
        await page.keyboard.press(key)
    focus = await page.evaluate(FOCUS)
    raise AssertionError(f"{MAX_TABS} × {key} never reached {selector}; the focus is on {focus['html']}")


@pytest.fixture(scope="module")
async def notes(stack: Stack) -> str:
    """A second collection, so that the top bar's switcher is enabled."""
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as client:
        response = await client.post("/collections", json={"name": "notes"})
        assert response.status_code == 201, response.text
    return "notes"


async def test_by_keyboard_alone_sign_in_switch_upload_search_open_ask_and_cite(
    browser: Browser,
    stack: Stack,
    documents: dict[str, dict[str, Any]],
    notes: str,
    page_console: Console,
    tmp_path: Path,
) -> None:
    page = await new_page(browser, page_console, viewport=DESKTOP)
    # Playwright turns on catching the file chooser when a listener is added, without waiting: a listener
    # from the start, so that the Enter below does not open the chooser before it is caught.
    page.on("filechooser", lambda chooser: None)
    await page.goto(stack.base_url + "/")
    # Sign in: the key's field has the focus; Enter sends the form.
    await tab_to(page, "#api-key")
    await page.keyboard.type(stack.admin_key)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("navigation", name="Main")).to_be_visible()

    # The collection: the switcher in the top bar, an arrow key picks the next one.
    await tab_to(page, "#collection")
    await page.keyboard.press("ArrowDown")
    await expect(page.locator("#collection")).to_have_value(notes)

    # Upload: Documents, Upload, the files' button opens the browser's file chooser.
    await tab_to(page, 'nav a[href="#/documents"]')
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Documents", exact=True)).to_be_visible()
    await tab_to(page, "button[aria-controls=upload-panel]")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name=f"Upload to {notes}")).to_be_visible()
    await tab_to(page, "#upload-files")
    note = tmp_path / "narwhals.txt"
    note.write_text("Narwhals are whales of the Arctic. A narwhal's tusk is a long spiral tooth.")
    async with page.expect_file_chooser() as chooser:
        await page.keyboard.press("Enter")
    await (await chooser.value).set_files(note)
    row = page.locator(".upload-list li", has_text="narwhals.txt")
    await expect(row.get_by_role("link")).to_have_text(re.compile(r"chunks? · view$"), timeout=60_000)

    # Search, then open the result: its document's page.
    await tab_to(page, 'nav a[href="#/search"]')
    await page.keyboard.press("Enter")
    await tab_to(page, "#search-query")
    await page.keyboard.type("narwhal tusk")
    await page.keyboard.press("Enter")
    await expect(page.locator(".hit").first).to_contain_text("narwhals.txt")
    await tab_to(page, ".hit-title a")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="narwhals.txt")).to_be_visible()

    # Chat: ask, then Shift+Tab back from the message box into the answer to its citation.
    await tab_to(page, 'nav a[href="#/chat"]')
    await page.keyboard.press("Enter")
    await tab_to(page, "#chat-message")
    await page.keyboard.type("What is a narwhal's tusk?")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("button", name="Copy answer")).to_be_visible(timeout=60_000)
    await tab_to(page, ".answer-body .cite", backwards=True)
    citation = page.locator(".answer-body .cite").first
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name=re.compile("narwhals.txt"))
    await expect(dialog).to_be_visible()
    # While it is open, Tab moves in the dialog (or out to the browser's own controls: the page's body), never
    # to the page behind it; Escape closes it and gives the focus back to the citation.
    for _ in range(6):
        await page.keyboard.press("Tab")
        where = await page.evaluate(FOCUS)
        assert await page.evaluate(
            "!document.activeElement || document.activeElement === document.body"
            " || Boolean(document.activeElement.closest('dialog[open]'))"
        ), f"Tab left the open dialog for {where['html']}"
    await page.keyboard.press("Escape")
    await expect(dialog).to_have_count(0)
    await expect(citation).to_be_focused()
    await page.context.close()
    assert not page_console.unexpected(), page_console.unexpected()


async def test_by_keyboard_alone_the_phone_drawer_of_chats_opens_and_closes(
    browser: Browser, stack: Stack, documents: dict[str, dict[str, Any]], page_console: Console
) -> None:
    """On a phone the chats are a drawer over the chat: Tab may not wander behind its backdrop."""
    page = await new_page(browser, page_console, viewport=PHONE)
    await sign_in(page, stack.base_url, stack.admin_key)
    await page.wait_for_load_state("networkidle")
    await tab_to(page, "button.drawer-toggle")
    await page.keyboard.press("Enter")
    new_chat = page.get_by_role("button", name="New chat")
    await expect(new_chat).to_be_focused()
    for _ in range(MAX_TABS):
        await page.keyboard.press("Tab")
        inside = await page.evaluate("Boolean(document.activeElement?.closest('.chat-sidebar'))")
        if not inside:
            # Left the drawer: it closed, so the focus is on nothing hidden behind it.
            await expect(page.locator(".drawer-open")).to_have_count(0)
            break
    else:
        raise AssertionError("Tab never left the drawer of chats")
    await tab_to(page, "button.drawer-toggle", backwards=True)
    await page.keyboard.press("Enter")
    await expect(new_chat).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(page.locator(".drawer-open")).to_have_count(0)
    await expect(page.locator("button.drawer-toggle")).to_be_focused()
    await page.context.close()
    assert not page_console.unexpected(), page_console.unexpected()
