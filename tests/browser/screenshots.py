"""`just screenshots`: every main view of the web app, light and dark, in reports/ui/.

A throwaway stack like the browser tests' (embedded PostgreSQL in a temp dir, `rag-server serve` and
`rag-server worker`, no LLM: answers are extractive), a few sample documents, one conversation; then one
PNG per view and colour scheme (the status page also with its server gone, and phone-* shots at 390x844).
Run: `python -m tests.browser.screenshots [--out reports/ui]`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import httpx
from playwright.async_api import Browser, Page, async_playwright

from rag_server.infra import admin
from rag_server.infra.embedded_postgres import ensure_embedded_postgres
from tests.browser.conftest import Stack, chromium_path, sign_in, start_stack, stop_stack
from tests.support.sample_files import pptx_bytes

SAMPLES = {
    "lighthouses.md": "# Lighthouses\n\nA Fresnel lens focuses the lamp's light into a beam visible for "
    "more than twenty nautical miles. Augustin Fresnel designed it in 1822 for French lighthouses.\n\n"
    "Each lighthouse has its own flash pattern, its *characteristic*, so sailors can tell them apart.",
    "coast/tides.txt": "Tides are caused by the Moon's gravity pulling on the oceans. Spring tides happen at "
    "new and full moon, when Sun and Moon line up; neap tides at the quarter moons.",
    "coast/harbours.txt": "A harbour shelters ships from waves. Breakwaters are built of rock or concrete "
    "blocks; lighthouses at their ends mark the entrance at night.",
}
# A deck: search hits and chunks name their slide and its title.
DECK = pptx_bytes(
    [
        {"title": "Lighthouse keepers", "body": "Keepers trimmed the wicks and wound the clockwork."},
        {"title": "Optics", "body": "The Fresnel lens beam turns once a minute.", "notes": "Mention 1822."},
    ]
)
QUESTION = "How far can a lighthouse beam be seen?"
# A common phone's viewport (CSS pixels) for the phone-* shots.
PHONE = {"width": 375, "height": 812}


def upload_samples(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=60) as client:
        files = [("files", (name, text.encode(), "text/plain")) for name, text in SAMPLES.items()]
        files.append(("files", ("lighthouse-deck.pptx", DECK, "application/octet-stream")))
        batch = client.post("/upload", files=files).raise_for_status().json()["batch_id"]
        deadline = time.monotonic() + 300
        while not client.get(f"/tasks/{batch}/status").json()["done"]:
            if time.monotonic() > deadline:
                raise TimeoutError("the sample documents were not ingested")
            time.sleep(0.5)


async def shoot(page: Page, out: Path, name: str, scheme: str) -> None:
    await page.wait_for_load_state("networkidle")
    await page.screenshot(path=str(out / f"{name}-{scheme}.png"))
    print(f"wrote {out / f'{name}-{scheme}.png'}")


async def views(browser: Browser, stack: Stack, out: Path, scheme: str) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme=scheme)
    page = await context.new_page()
    await page.goto(stack.base_url + "/")
    await page.get_by_label("API key").wait_for()
    await shoot(page, out, "sign-in", scheme)
    await sign_in(page, stack.base_url, stack.admin_key)
    await page.get_by_role("button", name="New chat").click()
    await page.get_by_label("Message").fill(QUESTION)
    await page.get_by_role("button", name="Send").click()
    citation = page.get_by_role("button", name="Source 1", exact=False).first
    await citation.wait_for()
    await page.get_by_role("button", name="Copy answer").wait_for()
    await page.locator(".sources summary").click()  # the cited sources, then those only retrieved
    await shoot(page, out, "chat", scheme)
    await citation.click()
    await page.get_by_role("dialog").wait_for()
    await shoot(page, out, "citation", scheme)
    await page.keyboard.press("Escape")
    await page.goto(stack.base_url + "/#/documents")
    await page.get_by_role("link", name="lighthouses.md").first.wait_for()
    await shoot(page, out, "documents", scheme)
    await page.goto(stack.base_url + "/#/search?q=Fresnel+lens+beam&mode=hybrid")
    await page.get_by_label("Time per stage").wait_for()
    await shoot(page, out, "search", scheme)
    # A document's chunks, each with its slide and the slide's title.
    await page.get_by_role("link", name="lighthouse-deck.pptx").first.click()
    await page.locator(".chunk").first.wait_for()
    await page.locator(".chunk").last.scroll_into_view_if_needed()
    await shoot(page, out, "document", scheme)
    await page.goto(stack.base_url + "/#/admin")
    await page.locator('.admin-table tr[data-name="default"]').wait_for()
    await shoot(page, out, "admin", scheme)
    await page.goto(stack.base_url + "/#/admin/tasks")
    await page.locator(".tasks-table tbody tr").first.wait_for()
    await shoot(page, out, "tasks", scheme)
    await page.goto(stack.base_url + "/#/status")
    await page.get_by_text("BM25 engine").wait_for()
    await shoot(page, out, "status", scheme)
    # The server gone: the facts last known, marked with their time, under the alert.
    await page.route("**/status", lambda route: route.abort())
    await page.get_by_role("alert").get_by_text("could not be refreshed", exact=False).wait_for()
    await page.screenshot(path=str(out / f"status-stale-{scheme}.png"))
    print(f"wrote {out / f'status-stale-{scheme}.png'}")
    await page.unroute("**/status")
    await page.set_viewport_size(PHONE)
    await page.goto(stack.base_url + "/#/chat")
    await page.get_by_label("Message").wait_for()
    await shoot(page, out, "phone-chat", scheme)
    await page.goto(stack.base_url + "/#/search?q=Fresnel+lens+beam&mode=hybrid")
    await page.get_by_label("Time per stage").wait_for()
    await shoot(page, out, "phone-search", scheme)
    await page.goto(stack.base_url + "/#/status")
    await page.get_by_text("BM25 engine").wait_for()
    await shoot(page, out, "phone-status", scheme)
    # Documents named with their folders, and the upload panel with its "replace" choice.
    await page.goto(stack.base_url + "/#/documents")
    await page.get_by_role("link", name="coast/tides.txt").wait_for()
    await page.get_by_role("button", name="Upload", exact=True).click()
    await page.get_by_label("Replace documents of the same name").wait_for()
    await shoot(page, out, "phone-documents", scheme)
    await context.close()


async def run(out: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="ragshots-", dir="/tmp"))
    embedded = ensure_embedded_postgres(root / "pg")
    try:
        database_url = await admin.create_database(embedded.uri, "screenshots")
        # No LLM: the answers shown are the extractive ones, real sentences quoted from the samples.
        stack = start_stack(database_url, root, None)
        try:
            await asyncio.to_thread(upload_samples, stack)
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=chromium_path())
                for scheme in ("light", "dark"):
                    await views(browser, stack, out, scheme)
                await browser.close()
        finally:
            stop_stack(stack)
    finally:
        embedded.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/ui"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(args.out))


if __name__ == "__main__":
    main()
