"""The dashboard in Debian's headless Chromium, driven by playwright, against a real proxy."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from metering.events import UsageEvent
from metering.report import format_usd
from tests.e2e.test_usage_api import ADMIN_TOKEN, MICRO, seed_traffic, start_usage_proxy
from tests.processes import Process, Proxy

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, simulator: Process) -> Iterator[tuple[Proxy, list[UsageEvent]]]:
    proxy = start_usage_proxy(tmp_path_factory.mktemp("dashboard"), simulator)
    with pytest.MonkeyPatch.context() as monkeypatch:
        events = seed_traffic(proxy, monkeypatch)
    yield proxy, events
    proxy.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Not skipped when missing: .ci/run installs Debian's chromium before `make test`.
    assert shutil.which("chromium"), "Debian's chromium is required (.ci/run installs it)"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
    yield page, problems
    context.close()


def _cost(events: list[UsageEvent], org: str, app: str | None = None) -> int:
    return sum(event.cost_micro_usd for event in events if event.org == org and app in (None, event.app))


def test_dashboard_shows_the_seeded_numbers(seeded: tuple[Proxy, list[UsageEvent]],
                                            page: tuple[Any, list[str]]) -> None:
    proxy, events = seeded
    assert httpx.get(f"{proxy.admin_url}/dashboard", timeout=5).status_code == 200  # the page needs no token
    tab, problems = page
    tab.goto(f"{proxy.admin_url}/dashboard?token={ADMIN_TOKEN}")
    apps = tab.locator("#apps")
    sync_api.expect(apps.locator('tr[data-row="acme / chat"]')).to_contain_text(format_usd(_cost(events, "acme", "chat")))
    sync_api.expect(apps.locator('tr[data-row="beta / bot"]')).to_contain_text(format_usd(_cost(events, "beta")))
    quota = tab.locator(f'#quotas .figures[data-scope="acme"][data-model="{MICRO}"]')
    sync_api.expect(quota).to_contain_text(f"${format_usd(_cost(events, 'acme'))} of $1.000000")
    sync_api.expect(quota).to_contain_text(" leased · ")  # what replicas' budget leases hold (issue #18)
    sync_api.expect(quota).to_contain_text(" remaining")
    tokens = sum(event.input_tokens + event.output_tokens for event in events)
    sync_api.expect(tab.locator(f'#rates .chart[data-model="{MICRO}"] svg')).to_have_count(2)
    sync_api.expect(tab.locator(f'#rates .chart[data-model="{MICRO}"]')).to_contain_text("overall peak")
    sync_api.expect(tab.locator("#models")).to_contain_text(f"{sum(e.input_tokens for e in events):,}")
    assert tokens > 0
    assert "token=" not in tab.url  # kept in sessionStorage, out of history
    tab.wait_for_timeout(5500)  # one live refresh
    assert tab.locator("#error").text_content() == ""
    assert problems == []


def test_dashboard_asks_for_the_token_once(seeded: tuple[Proxy, list[UsageEvent]],
                                          page: tuple[Any, list[str]]) -> None:
    proxy, events = seeded
    tab, problems = page
    tab.goto(f"{proxy.admin_url}/dashboard")
    form = tab.locator("#token-form")
    sync_api.expect(form).to_be_visible()
    tab.fill("#token-input", ADMIN_TOKEN)
    tab.click("#token-form button")
    sync_api.expect(form).to_be_hidden()
    sync_api.expect(tab.locator("#apps")).to_contain_text(format_usd(_cost(events, "acme", "batch")))
    tab.reload()  # the token survives in sessionStorage
    sync_api.expect(tab.locator("#apps")).to_contain_text(format_usd(_cost(events, "acme", "batch")))
    assert form.is_hidden()
    assert problems == []
