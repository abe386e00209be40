"""Times and dates look the same on every page (dom.js formatTime): QA (2026-12-07) saw three styles, the
chat sidebar's 12-hour clock ("07:14 AM" in an en-US browser), Status's 24-hour one and the locale's whole
date and time on the Documents and Admin pages.

The browser's time zone and language are fixed here (Tokyo, en-US: a 12-hour locale), and so is its clock
(Playwright's clock: at the chat's own last activity), so what each page shows is known in advance."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
from playwright.async_api import Browser, expect

from tests.browser.conftest import Console, Stack, new_page, sign_in
from tests.browser.seed import bearer, upload_and_wait

ZONE = "Asia/Tokyo"
FULL = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


async def test_the_chat_sidebar_status_and_documents_show_times_in_one_style(
    browser: Browser, stack: Stack, page_console: Console
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60) as api:
        made = await api.post("/chat/sessions", json={"title": "Timed chat"})
        assert made.status_code == 201, made.text
    await upload_and_wait(stack, {"clock.txt": b"Clocks in Tokyo keep Japan Standard Time."})
    at = datetime.fromisoformat(made.json()["last_active_at"])
    local = at.astimezone(ZoneInfo(ZONE))

    page = await new_page(
        browser, page_console, viewport={"width": 1280, "height": 860}, timezone_id=ZONE, locale="en-US"
    )
    # The page's "now" is the chat's last activity: "today" for it whatever the time of the run.
    await page.clock.set_fixed_time(at)
    await sign_in(page, stack.base_url, stack.admin_key)

    row = page.get_by_role("list", name="Chats", exact=True).locator(".session-item", has_text="Timed chat")
    await expect(row.locator(".session-date")).to_have_text(local.strftime("%H:%M"))  # not "07:14 AM"
    shown = row.locator(".session-date time")
    await expect(shown).to_have_attribute("title", local.strftime("%Y-%m-%d %H:%M:%S"))
    machine = datetime.fromisoformat(str(await shown.get_attribute("datetime")))
    assert machine == at.replace(microsecond=at.microsecond // 1000 * 1000)  # JavaScript's milliseconds

    # Status: the same clock (with its seconds: its facts are refreshed every 5 s), the same full time.
    await page.get_by_role("link", name="Status").click()
    updated = page.locator("#status-updated time")
    await expect(updated).to_have_text(local.strftime("%H:%M:%S"))
    await expect(updated).to_have_attribute("title", local.strftime("%Y-%m-%d %H:%M:%S"))
    await expect(page.locator(".facts")).to_have_accessible_description(f"Updated {local:%H:%M:%S}")

    # Documents: the upload's time (earlier than the page's fixed "now", maybe another day) in the same
    # style, its full time on hover; not the locale's "12/7/2026, 7:14:05 AM".
    await page.get_by_role("link", name="Documents", exact=True).click()
    uploaded = page.locator("tbody tr", has_text="clock.txt").locator("time")
    await expect(uploaded).to_have_text(re.compile(r"^(\d\d:\d\d|[A-Z][a-z]{2} \d{1,2}|\d{4}-\d\d-\d\d)$"))
    await expect(uploaded).to_have_attribute("title", FULL)
    await page.context.close()
    assert not page_console.unexpected(), page_console.unexpected()


async def test_a_time_is_shown_by_how_long_ago_it_was(
    browser: Browser, stack: Stack, page_console: Console
) -> None:
    """Today: its clock; this year: month and day; before: the whole date. In the page's own module."""
    page = await new_page(browser, page_console, timezone_id=ZONE, locale="en-US")
    await page.goto(stack.base_url + "/")
    shown = await page.evaluate(
        """async () => {
          const { formatTime, fullTime } = await import("/assets/dom.js");
          const now = new Date("2026-12-07T22:30:00+09:00");
          return [
            formatTime("2026-12-07T00:05:09+09:00", { now }),
            formatTime("2026-12-07T13:05:09Z", { now }),
            formatTime("2026-12-07T13:05:09Z", { now, seconds: true }),
            formatTime("2026-12-06T23:59:00+09:00", { now }),
            formatTime("2026-01-31T12:00:00+09:00", { now }),
            formatTime("2025-12-31T12:00:00+09:00", { now }),
            formatTime("not a date", { now }),
            fullTime("2026-03-04T05:06:07+09:00"),
          ];
        }"""
    )
    assert shown == ["00:05", "22:05", "22:05:09", "Dec 6", "Jan 31", "2025-12-31", "", "2026-03-04 05:06:07"]
    await page.context.close()
    assert not page_console.unexpected(), page_console.unexpected()
