"""Headless Chromium from Debian, driven by Playwright (never a browser download), and what a
console test waits for before it looks at a page."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
# The flags headless Chromium needs on this machine (as root, no network beyond loopback).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[BrowserContext]:
    with sync_playwright() as pw:
        # A fresh, empty profile each run (Playwright's way of passing --user-data-dir).
        browser = pw.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="dotshop-chromium-"),
            executable_path=CHROMIUM,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1440, "height": 1000},
        )
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page: Page, url: str, name: str, password: str) -> None:
    page.goto(url)
    page.get_by_label("Operator").fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    settled(page, "Overview")


def open_page(page: Page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    settled(page, title)


def settled(page: Page, title: str) -> None:
    """The page's title is shown and Streamlit has finished running the script: no status
    widget ("Running..."), no skeleton left where a fragment or element is still coming."""
    expect(page.get_by_role("heading", name=title, exact=True).first).to_be_visible()
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
    expect(page.get_by_test_id("stSkeleton")).to_have_count(0)


def no_exception(page: Page, where: str) -> None:
    shown = page.get_by_test_id("stException")
    assert shown.count() == 0, f"{where}: {shown.first.inner_text()}"
