"""The console in a real browser: Debian's headless Chromium, driven by Playwright, against a
real `dotshop console` process on the demo day's database. It signs in, opens every page, saves
a screenshot of each (build/console-screenshots/), retries a dead letter from the Outbox page,
and fails on any exception Streamlit shows on a page."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

import console
from tests.console.browser import chromium, no_exception, open_page, sign_in
from tests.console.conftest import PASSWORDS, console_users
from tests.console.demo import Demo
from tests.e2e.conftest import Stack
from tests.processes import free_port, start_dotshop

pytestmark = pytest.mark.slow

PAGES = ("Overview", "Reconciliation", "Inventory & sync", "Orders", "Outbox", "Alerts & runbooks")
# Pages that open on a table (Orders opens on its search box).
WITH_TABLES = frozenset(PAGES) - {"Orders"}
SCREENSHOTS = Path(console.__file__).resolve().parents[1] / "build" / "console-screenshots"


@pytest.fixture(scope="module")
def console_url(
    stack: Stack, demo: Demo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_dotshop(
        ["console", "--port", str(port)],
        [f"{url}/_stcore/health"],
        str(tmp_path_factory.mktemp("console") / "console.log"),
        env={"DATABASE_URL": stack.db_url, "DOTSHOP_CONSOLE_USERS": console_users()},
    )
    try:
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def browser_page(console_url: str) -> Iterator[Page]:
    with chromium() as browser:
        page = browser.new_page()
        page.set_default_timeout(30_000)
        yield page


def test_sign_in_open_every_page_and_retry_a_dead_letter(
    browser_page: Page, console_url: str, stack: Stack, demo: Demo
) -> None:
    page = browser_page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(console_url)
    expect(page.get_by_label("Operator")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "00-sign-in.png"))
    sign_in(page, console_url, "admin", PASSWORDS["admin"])

    load_seconds = {}
    for n, title in enumerate(PAGES, start=1):
        started = time.monotonic()
        open_page(page, title)
        if title in WITH_TABLES:
            expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
        load_seconds[title] = round(time.monotonic() - started, 3)
        no_exception(page, title)
        shot = SCREENSHOTS / f"{n:02d}-{title.split()[0].lower()}.png"
        page.screenshot(path=str(shot), full_page=True)
    (SCREENSHOTS / "load-seconds.json").write_text(json.dumps(load_seconds, indent=2))

    open_page(page, "Outbox")
    form = page.get_by_test_id("stForm")
    form.get_by_text("I have read the last error and want to do this").click()
    form.get_by_label("Reason (required to discard)").fill("Shopify is back")
    form.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("retry recorded in the audit log as admin")).to_be_visible()
    no_exception(page, "Outbox after retry")
    page.screenshot(path=str(SCREENSHOTS / "07-outbox-retried.png"))

    retried = stack.sql(
        "SELECT o.public_id, o.status, a.actor, a.data ->> 'reason' FROM outbox o"
        " JOIN audit_log a ON a.subject = o.public_id AND a.action = 'outbox.retry'"
    )
    assert len(retried) == 1
    assert tuple(retried[0])[1:] == ("pending", "admin", "Shopify is back")
