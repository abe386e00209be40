"""The app shell: served at / with a strict CSP, sign-in with an API key, navigation, status."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import Console, Stack, new_page, sign_in
from tests.browser.seed import bearer, create_key


async def test_shell_is_served_with_a_strict_content_security_policy(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        index = await client.get("/")
        module = await client.get("/assets/app.js")
        missing = await client.get("/assets/nope.js")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    csp = index.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert module.status_code == 200 and "javascript" in module.headers["content-type"]
    assert module.headers["content-security-policy"] == csp
    assert missing.status_code == 404


async def test_sign_in_refuses_a_wrong_key_then_accepts_the_right_one(
    browser: Browser, stack: Stack, page_console: Console
) -> None:
    page = await new_page(browser, page_console)
    page_console.allow("401")  # the refused key's request
    await page.goto(stack.base_url + "/")
    await page.get_by_label("API key").fill("rag_not_a_real_key_000000000000000000")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("key")
    await page.get_by_label("API key").fill(stack.admin_key)
    await page.get_by_role("button", name="Sign in").click()
    nav = page.get_by_role("navigation", name="Main")
    await expect(nav.get_by_role("link", name="Chat", exact=True)).to_be_visible()
    # The key stays in this tab's sessionStorage, never in the URL.
    assert stack.admin_key not in page.url
    await page.reload()
    await expect(nav).to_be_visible()
    await page.context.close()
    assert not page_console.unexpected()


async def test_status_shows_engines_llm_and_queue(page: Page) -> None:
    await page.get_by_role("link", name="Status").click()
    facts = page.locator(".facts")
    await expect(facts).to_contain_text("BM25 engine")
    await expect(facts).to_contain_text("all-MiniLM-L6-v2")
    await expect(facts).to_contain_text("openai: fake-llm")
    await expect(facts).to_contain_text("0 queued")
    assert page.url.endswith("#/status")


async def test_status_says_when_its_facts_could_not_be_refreshed(page: Page, page_console: Console) -> None:
    """A failed refresh put its error where the time was: the facts above still looked current (a queue of 0
    while the server was gone). They stay, marked with their time, an alert says so, and it goes by itself."""
    page_console.allow("Failed to load resource")  # the /status requests failed on purpose
    await page.get_by_role("link", name="Status").click()
    facts = page.locator(".facts")
    await expect(facts).to_contain_text("BM25 engine")
    alert = page.get_by_role("alert")
    await expect(alert).to_have_text("")
    clock = r"(\d\d:\d\d:\d\d)"

    await page.route("**/status", lambda route: route.abort())
    unreachable = re.compile(
        rf"^The facts shown are from {clock} and could not be refreshed: "
        r"The server cannot be reached\. Is rag-server running\?$"
    )
    await expect(alert).to_have_text(unreachable, timeout=15_000)
    at = unreachable.match(await alert.inner_text())
    assert at
    await expect(facts).to_contain_text("BM25 engine")
    await expect(facts).to_have_accessible_description(f"As of {at[1]}: not current")

    # A 5xx: the server's sentence, and the facts still from the same time (the last that succeeded).
    await page.unroute("**/status")
    await page.route(
        "**/status",
        lambda route: route.fulfill(status=503, json={"detail": "The database is unavailable."}),
    )
    await expect(alert).to_have_text(
        f"The facts shown are from {at[1]} and could not be refreshed: The database is unavailable.",
        timeout=15_000,
    )
    await expect(facts).to_contain_text("0 queued")

    await page.unroute("**/status")
    await expect(alert).to_have_text("", timeout=15_000)
    await expect(facts).to_have_accessible_description(re.compile(rf"^Updated {clock}$"))


async def test_each_view_names_itself_in_the_tab_title(page: Page, stack: Stack) -> None:
    """Tabs, history and a screen reader's page announcement tell the views apart (all were "rag-server")."""
    await page.get_by_role("link", name="Documents", exact=True).click()
    await expect(page).to_have_title("Documents · rag-server")
    await page.get_by_role("link", name="Search", exact=True).click()
    await expect(page).to_have_title("Search · rag-server")
    await page.get_by_label("Query").fill("otters")
    await page.get_by_role("button", name="Search", exact=True).click()
    await expect(page).to_have_title("otters · Search · rag-server")
    await page.get_by_role("link", name="Status").click()
    await expect(page).to_have_title("Status · rag-server")
    await page.get_by_role("link", name="Chat", exact=True).click()
    await expect(page).to_have_title("New chat · rag-server")


async def test_a_link_with_broken_percent_encoding_opens_its_view(
    page: Page, stack: Stack, page_console: Console
) -> None:
    """A link cut short inside a %-escape threw URIError: "Loading…" for ever on a fresh load."""
    page_console.allow("422")  # the chat id "%zz" is refused by the API: "This chat does not exist"
    await page.goto(stack.base_url + "/#/chat/%zz")
    await page.reload()
    await expect(page.get_by_text("This chat does not exist")).to_be_visible()
    await page.goto(stack.base_url + "/#/documents/%E0%A4%A")
    await expect(page.get_by_role("heading", name="Document not found")).to_be_visible()


async def test_sign_out_leaves_nothing_of_the_key_for_whoever_signs_in_next(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    """The tab forgot the key but kept its upload list (file names, links to the documents) and its chat in
    memory: the next key signed in in the same tab saw them."""
    await page.get_by_role("link", name="Documents", exact=True).click()
    await page.get_by_role("button", name="Upload", exact=True).click()
    secret = tmp_path / "admins-secret-plan.txt"
    secret.write_bytes(b"The admin's secret plan is about turtles.")
    await page.get_by_label("Files to upload").set_input_files(secret)
    row = page.locator(".upload-row", has_text="admins-secret-plan.txt")
    await expect(row).to_have_attribute("data-status", "completed", timeout=60_000)

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("API key")).to_be_visible()
    assert await page.evaluate("Object.keys(sessionStorage).filter(k => k.startsWith('rag.'))") == []
    editor = await create_key(stack, "next-person", "editor")
    await page.get_by_label("API key").fill(editor)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#whoami")).to_have_text("next-person · editor")
    await page.get_by_role("link", name="Documents", exact=True).click()
    await page.get_by_role("button", name="Upload", exact=True).click()
    await expect(page.get_by_text("Nothing uploaded yet.")).to_be_visible()
    await expect(page.locator(".upload-row")).to_have_count(0)


async def test_the_sign_in_form_offers_no_navigation(
    browser: Browser, stack: Stack, page_console: Console
) -> None:
    """.mainnav's display: flex beat the hidden attribute: the sign-in form showed Chat, Documents, Search,
    Status (links that did nothing) and an empty collection switch."""
    page = await new_page(browser, page_console)
    await page.goto(stack.base_url + "/")
    await expect(page.get_by_label("API key")).to_be_visible()
    await expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    await expect(page.get_by_label("Collection")).to_be_hidden()
    await page.get_by_label("API key").fill(stack.admin_key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await page.context.close()
    assert not page_console.unexpected()


async def test_a_server_that_cannot_be_reached_is_said_with_a_way_to_try_again(
    browser: Browser, stack: Stack, page_console: Console
) -> None:
    """The start failing (server down, 503) left a bare red line where the app was: no form, no button."""
    page = await new_page(browser, page_console)
    page_console.allow("Failed to load resource")
    await page.route("**/status", lambda route: route.abort())
    await page.goto(stack.base_url + "/")
    await page.get_by_label("API key").fill(stack.admin_key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text(
        "The server cannot be reached. Is rag-server running?"
    )
    retry = page.get_by_role("button", name="Try again")
    await expect(retry).to_be_focused()
    await page.unroute("**/status")
    await retry.click()
    await expect(page.get_by_role("navigation", name="Main")).to_be_visible()

    # The documents list: the error while the server is away, the list again once it answers, by itself.
    await page.route("**/documents?*", lambda route: route.abort())
    await page.get_by_role("link", name="Documents", exact=True).click()
    error = page.locator(".page.documents .form-error")
    await expect(error).to_have_text("The server cannot be reached. Is rag-server running?")
    await expect(page.get_by_role("button", name="Next page")).to_be_hidden()
    await page.unroute("**/documents?*")
    await expect(error).to_be_empty(timeout=20_000)
    loaded = re.compile(r"^(1–\d+ of \d+|No documents in this collection yet\.)$")
    await expect(page.get_by_text(loaded)).to_be_visible()
    await page.context.close()
    assert not page_console.unexpected()


async def test_on_a_phone_the_key_signed_in_is_said_on_its_own_line(
    browser: Browser, stack: Stack, page_console: Console
) -> None:
    # It was hidden below 640 px: nothing on a phone said which key (and role) the app was using.
    phone = await new_page(browser, page_console, viewport={"width": 390, "height": 844})
    await sign_in(phone, stack.base_url, stack.admin_key)
    await phone.get_by_role("link", name="Status").click()
    whoami = phone.locator("#whoami")
    await expect(whoami).to_be_visible()
    await expect(whoami).to_have_text(re.compile(r" · admin$"))
    name = await whoami.bounding_box()
    sign_out = await phone.get_by_role("button", name="Sign out").bounding_box()
    assert name is not None and sign_out is not None
    assert name["y"] + name["height"] <= sign_out["y"]  # above it, not squeezed beside it
    assert await phone.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    card = await phone.locator(".card").first.bounding_box()
    assert card is not None and card["x"] >= 8 and card["x"] + card["width"] <= 390 - 8  # not edge to edge
    await phone.context.close()
    assert not page_console.unexpected()


async def test_on_a_phone_a_long_collection_name_fits_the_screen(
    browser: Browser, stack: Stack, page_console: Console
) -> None:
    # The switcher (as wide as its longest option) and "Collection …" lines pushed the pages sideways.
    name = "quarterly-engineering_reports" + "x" * 34  # the longest a name may be: 63 characters
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as client:
        assert (await client.post("/collections", json={"name": name})).status_code == 201
    phone = await new_page(browser, page_console, viewport={"width": 375, "height": 740}, color_scheme="dark")
    await sign_in(phone, stack.base_url, stack.admin_key)
    await phone.get_by_label("Collection").select_option(name)
    for view in ("Documents", "Search", "Chat", "Status"):
        await phone.get_by_role("link", name=view, exact=True).click()
        if view == "Documents":
            await phone.get_by_role("button", name="Upload", exact=True).click()
            await expect(phone.get_by_role("heading", name=f"Upload to {name}")).to_be_visible()
            await phone.screenshot(path="/tmp/shots/long-collection-phone.png", full_page=True)
        widths = await phone.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], (view, widths)
    await phone.context.close()
    assert not page_console.unexpected()
