"""The dashboard in Debian's headless Chromium, driven by playwright, against a real proxy."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from metering.events import UsageEvent
from metering.money import usd_fields
from metering.report import format_usd
from proxy.dashboard import dashboard_route
from tests.e2e.test_usage_api import (
    ADMIN_TOKEN,
    MICRO,
    seed_refusals,
    seed_traffic,
    start_usage_proxy,
)
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
    seed_refusals(proxy)
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
    return sum(event.cost_pico_usd for event in events if event.org == org and app in (None, event.app))


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


def test_dashboard_shows_repeated_authentication_failures(seeded: tuple[Proxy, list[UsageEvent]],
                                                          page: tuple[Any, list[str]]) -> None:
    proxy, _ = seeded
    tab, problems = page
    tab.goto(f"{proxy.admin_url}/dashboard?token={ADMIN_TOKEN}")
    failures = tab.locator("#auth-failures")
    row = failures.locator('tr[data-reason="bad_signature"]')
    sync_api.expect(row).to_contain_text("acme / leaky")
    sync_api.expect(row.locator("td").nth(3)).to_have_text("3")
    sync_api.expect(failures.locator('tr[data-key="CKIAUNKNOWNKEY000000"]')).to_contain_text("unknown_key")
    sync_api.expect(failures.locator('tr[data-reason="missing"]')).to_contain_text("(none or malformed)")
    assert problems == []


def test_dashboard_may_not_be_framed() -> None:
    """`frame-ancestors 'none'`: no other site can frame the page and its token form."""
    with TestClient(Starlette(routes=[dashboard_route()])) as client:
        policy = client.get("/dashboard").headers["content-security-policy"]
    directives = {part.strip().split(" ", 1)[0]: part.strip() for part in policy.split(";")}
    assert directives["frame-ancestors"] == "frame-ancestors 'none'"
    assert directives["default-src"] == "default-src 'none'" and directives["connect-src"] == "connect-src 'self'"


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


def test_dashboard_shows_amounts_past_2_to_the_53_pico_usd_exactly(seeded: tuple[Proxy, list[UsageEvent]],
                                                                   page: tuple[Any, list[str]]) -> None:
    """Pico-USD pass JavaScript's exact integers from $9,007.20: the page must not read
    them as numbers (2**53 + 1 would show as …992). The API's answers are replaced
    with amounts that large; the page is the real one."""
    proxy, _ = seeded
    tab, problems = page
    big, quota = 2**53 + 1, 10**22 + 7  # $9,007.199254740993 of $10,000,000,000.000000000007
    row = {"requests": 1, "input_tokens": 2, "output_tokens": 3, "cache_read_tokens": 0, "cache_write_tokens": 0,
           "total_tokens": 5, "estimated_requests": 0, "unpriced_requests": 0, "cache_efficiency": None,
           **usd_fields("cost", big)}
    bodies = {
        "usage": {"days": 1, "since": 0, "by": ["org", "app"], "rows": [{"org": "acme", "app": "chat", "model": MICRO,
                                                                          **row}], "total": row},
        "quotas": {"day": "2025-03-10", "lease_ttl": 30.0, "scopes": [{
            "scope": "acme", "org": "acme", "app": None, "chain": [MICRO], "active_model": MICRO,
            "models": [{"model": MICRO, **usd_fields("spend", big), **usd_fields("leased", 7),
                        **usd_fields("remaining", quota - big - 7), **usd_fields("quota", quota), "ratio": big / quota,
                        "holders": 1, "mode": "NORMAL", "exhausted": False}]}]},
        "rates": {"model": MICRO, "minutes": 60, "series": [],
                  "tpm": {"recent_peak_5m": 0, "avg_5m": 0, "overall_peak": {"value": 0, "time": None}},
                  "rpm": {"recent_peak_5m": 0, "avg_5m": 0, "overall_peak": {"value": 0, "time": None}}},
    }

    def answer(body: dict[str, Any]) -> Callable[[Any], None]:
        text = json.dumps(body)  # Python writes the integers' every digit
        return lambda route: route.fulfill(status=200, content_type="application/json", body=text)

    for name, body in bodies.items():
        tab.route(f"**/v1/{name}?*", answer(body))
    tab.route("**/v1/quotas", answer(bodies["quotas"]))
    tab.goto(f"{proxy.admin_url}/dashboard?token={ADMIN_TOKEN}")
    assert format_usd(big) == "9007.199254740993"
    sync_api.expect(tab.locator('#apps tr[data-row="acme / chat"]')).to_contain_text("$9007.199254740993")
    sync_api.expect(tab.locator(f'#quotas .figures[data-model="{MICRO}"]')).to_contain_text(
        "$9007.199254740993 of $10000000000.000000000007")
    sync_api.expect(tab.locator(f'#quotas .figures[data-model="{MICRO}"]')).to_contain_text(
        "$0.000000000007 leased · $9999990992.800745259007 remaining")
    sync_api.expect(tab.locator("#status")).to_contain_text("total $9007.199254740993")
    assert problems == []
