"""The dashboard in Debian's headless Chromium, driven by playwright, against a real proxy.

One proxy per module, with real traffic behind it: the usage API tests' (orgs `acme`
and `beta`), an org that spends its whole chain (`gamma`: two fallback events), prompt
caching on Claude (`delta`), and the six days before today written to the store as the
recorder writes them (a proxy keeps its history; a test cannot wait for days), and
refused requests (`seed_refusals`).

`COSTKEEPER_SCREENSHOTS=docs` saves the README's screenshots there (otherwise in tmp).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from metering.events import UsageEvent
from metering.leases import RECHECK
from metering.money import usd_fields
from metering.pricing import Price
from metering.report import format_usd
from metering.sqlite_store import SQLiteStore
from proxy.admin.dashboard import dashboard_routes
from tests.conftest import TEST_PRICING
from tests.e2e.clients import bedrock_client, wait_for_event
from tests.e2e.test_usage_api import (
    ADMIN_TOKEN,
    LITE,
    MICRO,
    USAGE_CONFIG,
    admin_get,
    seed_refusals,
    seed_traffic,
)
from tests.processes import REPO, Process, Proxy, start_proxy, words_for_half

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
#: The usage API tests' policy, and `gamma`: a chain the seed spends. Each quota is over 100
#: worst cases of the smallest request (≈ $0.000004 on small, $0.000007 on medium).
DASHBOARD_CONFIG: dict[str, Any] = {
    **USAGE_CONFIG,
    "orgs": {**USAGE_CONFIG["orgs"], "gamma": {"daily_quota_usd": {"small": 0.0006, "medium": 0.0012}}},
}
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}

sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")


def _spend_the_chain(proxy: Proxy) -> list[UsageEvent]:
    """`gamma/agent` spends its whole chain, each model to its last percent (`words_for_half`:
    each request costs about half of what the model the chain is on has left, read from the
    admin API), so each model is marked exhausted: the scope's fallback events. A request
    refused or moved on a read of the store younger than `RECHECK` (one that missed the
    last flush) is followed by one after RECHECK, which reads the store again. Bounded."""
    client = bedrock_client(proxy.issue_key("gamma", "agent"))
    events: list[UsageEvent] = []
    for number in range(120):
        (scope,) = [scope for scope in admin_get(proxy, "/v1/quotas").json()["scopes"] if scope["scope"] == "gamma"]
        state = {model["model"]: model for model in scope["models"]}
        on = next((model for model in (MICRO, LITE) if not state[model]["exhausted"]), None)
        if on is None:
            return events
        left = state[on]["quota_pico_usd"] - state[on]["spend_pico_usd"]
        price = Price.from_mapping(on, TEST_PRICING[on])
        words = words_for_half(left, price.input, price.output)
        try:
            response = client.converse(
                modelId="small", messages=[{"role": "user", "content": [{"text": f"[[sim:words={words}]] Fact {number}."}]}],
                inferenceConfig={"maxTokens": words})
        except client.exceptions.ServiceQuotaExceededException:
            time.sleep(RECHECK + 0.1)
            continue
        events.append(wait_for_event(proxy, response["ResponseMetadata"]["RequestId"]))
        if events[-1].model != on:
            time.sleep(RECHECK + 0.1)
    raise AssertionError("gamma's chain was not spent in 120 requests")


def _cached_prompts(proxy: Proxy) -> list[UsageEvent]:
    """`delta/search`: one long system prompt behind a cache point, written once, then read."""
    client = bedrock_client(proxy.issue_key("delta", "search"))
    system = [{"text": f"You answer from this manual {uuid.uuid4().hex}. " + "Section. " * 300}, {"cachePoint": {"type": "default"}}]
    events = []
    for question in ("Who?", "What?", "When?", "Where?"):
        response = client.converse(modelId=CLAUDE, system=system, messages=[{"role": "user", "content": [{"text": question}]}],
                                   inferenceConfig={"maxTokens": 30})
        events.append(wait_for_event(proxy, response["ResponseMetadata"]["RequestId"]))
    assert sum(event.cache_read_tokens for event in events) > 0
    return events


def _history(proxy: Proxy) -> list[UsageEvent]:
    """The six days before today, as the recorder writes them (all priced: costs given)."""
    now, events = time.time(), []
    for back in range(1, 7):
        for org, app, model, requests in (("acme", "chat", MICRO, 40 * back), ("acme", "batch", LITE, 25),
                                          ("delta", "search", CLAUDE, 10 + back)):
            events.append(UsageEvent(
                request_id=f"history-{back}-{org}-{app}", timestamp=now - back * 86_400, org=org, app=app,
                operation="Converse", requested_model=model, model=model, input_tokens=900 * requests,
                output_tokens=300 * requests, cache_read_tokens=0, cache_write_tokens=0,
                cost_pico_usd=requests * (2_000_000_000 if model == CLAUDE else 70_000_000), priced=True,
                latency_ms=300.0, first_byte_ms=None, status=200, estimated=False))

    async def write() -> None:
        async with SQLiteStore(str(proxy.store_path)) as store:
            assert await store.write_batch("dashboard-history", events)

    asyncio.run(write())
    return events


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, simulator: Process) -> Iterator[tuple[Proxy, list[UsageEvent]]]:
    """The proxy and today's metered events."""
    proxy = start_proxy(tmp_path_factory.mktemp("dashboard"), simulator.url, DASHBOARD_CONFIG,
                        env={"COSTKEEPER_ADMIN_TOKEN": ADMIN_TOKEN})
    with pytest.MonkeyPatch.context() as monkeypatch:
        events = seed_traffic(proxy, monkeypatch)
        events += _spend_the_chain(proxy) + _cached_prompts(proxy)
    _history(proxy)
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


def _open(browser: Any, size: tuple[int, int] = SIZES["desktop"]) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = context.new_page()
    problems: list[str] = []  # a CSP violation is a console error too
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
    return context, page, problems


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    context, tab, problems = _open(browser)
    yield tab, problems
    context.close()


def _cost(events: list[UsageEvent], org: str, app: str | None = None) -> int:
    return sum(event.cost_pico_usd for event in events if event.org == org and app in (None, event.app))


def test_dashboard_shows_the_seeded_numbers(seeded: tuple[Proxy, list[UsageEvent]],
                                            page: tuple[Any, list[str]]) -> None:
    proxy, events = seeded
    assert httpx.get(f"{proxy.admin_url}/dashboard", timeout=5).status_code == 200  # the page needs no token
    tab, problems = page
    tab.goto(f"{proxy.admin_url}/dashboard?token={ADMIN_TOKEN}")
    chat = tab.locator('#apps tr[data-row="acme / chat"] td').last  # short figure, exact in the tooltip
    sync_api.expect(chat).to_have_attribute("title", f"${format_usd(_cost(events, 'acme', 'chat'))}")
    sync_api.expect(chat).to_have_text(re.compile(r"^\$0\.0*[1-9]\d?$"))  # two significant digits
    beta = tab.locator('#apps tr[data-row="beta / bot"] td').last
    sync_api.expect(beta).to_have_attribute("title", f"${format_usd(_cost(events, 'beta'))}")
    quota = tab.locator(f'#quotas .quota-row[data-scope="acme"][data-model="{MICRO}"] .figures')
    # Budget leases (issue #18) add what replicas hold and what is left after the spend.
    sync_api.expect(quota).to_have_attribute("title", re.compile(
        "^" + re.escape(f"spent ${format_usd(_cost(events, 'acme'))} of $1.000000") + r", leased \$[\d.]+, remaining \$[\d.]+$"))
    sync_api.expect(quota).to_contain_text(" of $1.00 · ")
    inputs = sum(event.input_tokens for event in events if event.model == MICRO)
    sync_api.expect(tab.locator(f'#models tr[data-row="{MICRO}"] td').nth(2)).to_have_attribute("title", f"{inputs:,}")
    sync_api.expect(tab.locator(f'#rates .chart-box[data-model="{MICRO}"] svg')).to_have_count(2)
    sync_api.expect(tab.locator(f'#rates .chart-box[data-model="{MICRO}"]')).to_contain_text("5-min peak")
    assert "token=" not in tab.url  # kept in sessionStorage, out of history
    tab.wait_for_timeout(5500)  # one live refresh
    assert tab.locator("#error").text_content() == ""
    assert problems == []


def test_spend_vs_quota_and_todays_fallbacks(seeded: tuple[Proxy, list[UsageEvent]],
                                             page: tuple[Any, list[str]]) -> None:
    proxy, _ = seeded
    (gamma,) = [scope for scope in admin_get(proxy, "/v1/quotas").json()["scopes"] if scope["scope"] == "gamma"]
    first, second = gamma["fallbacks"]
    assert (first["from"], first["to"], second["from"], second["to"]) == (MICRO, LITE, LITE, None)
    assert first["time"] <= second["time"] and first["time"].endswith("Z")
    assert gamma["active_model"] is None and all(model["exhausted"] for model in gamma["models"])
    tab, problems = page
    tab.goto(f"{proxy.admin_url}/dashboard?token={ADMIN_TOKEN}")
    rows = tab.locator('#fallbacks tr[data-scope="gamma"]')
    sync_api.expect(rows).to_have_count(2)
    sync_api.expect(rows.nth(0)).to_contain_text(f"{MICRO}→ {LITE}")
    sync_api.expect(rows.nth(0).locator("td").first).to_have_text(first["time"][11:19])
    sync_api.expect(rows.nth(1)).to_contain_text(f"{LITE}→ none: refused")
    sync_api.expect(tab.locator('#quotas h3[data-scope="gamma"]')).to_contain_text("chain spent")
    for model in (MICRO, LITE):  # bars coloured by state
        row = tab.locator(f'#quotas .quota-row[data-scope="gamma"][data-model="{model}"]')
        sync_api.expect(row.locator(".bar")).to_have_class("bar exhausted")
        sync_api.expect(row.locator(".badge")).to_have_text("exhausted")
    sync_api.expect(tab.locator(f'#quotas .quota-row[data-scope="acme"][data-model="{MICRO}"] .bar')).to_have_class("bar NORMAL")
    assert problems == []


@pytest.mark.parametrize("size", SIZES)
def test_layout_ids_never_wrap_and_every_chart_draws(seeded: tuple[Proxy, list[UsageEvent]], browser: Any,
                                                     size: str, tmp_path: Path) -> None:
    proxy, _ = seeded
    width, height = SIZES[size]
    context, tab, problems = _open(browser, (width, height))
    try:
        tab.goto(f"{proxy.admin_url}/dashboard?token={ADMIN_TOKEN}")
        sync_api.expect(tab.locator("#daily svg.chart .datum").first).to_be_attached()
        sync_api.expect(tab.locator("#cache svg.chart .datum").first).to_be_attached()
        sync_api.expect(tab.locator("#rates svg.chart").first).to_be_attached()
        # Every id on one line: all the line boxes of its text start at one height.
        wrapped = tab.evaluate("""() => [...document.querySelectorAll('.id')].filter((e) => {
            const walker = document.createTreeWalker(e, NodeFilter.SHOW_TEXT), range = document.createRange(), tops = [];
            for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                range.selectNodeContents(node);
                for (const box of range.getClientRects()) tops.push(box.top);
            }
            return Math.max(...tops) - Math.min(...tops) > parseFloat(getComputedStyle(e).lineHeight) / 2;
        }).map((e) => e.textContent)""")
        assert wrapped == []
        assert tab.locator(".id").count() > 20
        # Tables and rows scroll inside their card: the page itself never scrolls sideways.
        assert tab.evaluate("document.documentElement.scrollWidth") <= width
        # Every chart has drawn data: a mark with a visible box.
        charts = tab.evaluate("""() => [...document.querySelectorAll('svg.chart')].map((chart) => ({
            label: chart.getAttribute('aria-label'),
            drawn: [...chart.querySelectorAll('.datum')].some((d) => {
                const box = d.getBoundingClientRect(); return box.width > 0 && box.height > 0; }),
        }))""")
        labels = [chart["label"] for chart in charts]
        assert "cost per day" in labels and "tpm" in labels and "rpm" in labels
        assert any(label.startswith("cache efficiency of") for label in labels)
        assert [chart for chart in charts if not chart["drawn"]] == []
        days = tab.locator("#daily .datum").evaluate_all("(bars) => [...new Set(bars.map((b) => b.dataset.day))]")
        assert len(days) == 7  # today and the six days of history
        tab.evaluate("document.fonts.ready")
        shots = REPO / os.environ.get("COSTKEEPER_SCREENSHOTS", str(tmp_path))  # an absolute path stays as it is
        tab.screenshot(path=str(shots / f"dashboard-{width}x{height}.png"))
        assert problems == []
    finally:
        context.close()


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
    batch = tab.locator('#apps tr[data-row="acme / batch"] td').last
    sync_api.expect(batch).to_have_attribute("title", f"${format_usd(_cost(events, 'acme', 'batch'))}")
    tab.reload()  # the token survives in sessionStorage
    sync_api.expect(batch).to_have_attribute("title", f"${format_usd(_cost(events, 'acme', 'batch'))}")
    assert form.is_hidden()
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


def test_the_page_allows_nothing_inline_and_no_framing() -> None:
    """`frame-ancestors 'none'`: no other site can frame the page and its token form; script
    and style only from the admin port itself (the browser tests fail on any violation)."""
    with TestClient(Starlette(routes=dashboard_routes())) as client:
        for path, kind in (("/dashboard", "text/html"), ("/dashboard.js", "text/javascript"), ("/dashboard.css", "text/css")):
            response = client.get(path)
            assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        policy = client.get("/dashboard").headers["content-security-policy"]
    directives = {part.strip().split(" ", 1)[0]: part.strip() for part in policy.split(";")}
    assert directives["frame-ancestors"] == "frame-ancestors 'none'"
    assert directives["default-src"] == "default-src 'none'" and directives["connect-src"] == "connect-src 'self'"
    assert directives["script-src"] == "script-src 'self'" and directives["style-src"] == "style-src 'self'"
    assert "unsafe" not in policy and "http" not in policy


#: What would parse a string as markup or code, or run one as a handler or a link.
_HTML_SINKS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|DOMParser|createContextualFragment|srcdoc"
    r"|\beval\(|new Function|set(?:Timeout|Interval)\(\s*[\"'`]|javascript:"
    r"|[\"']?\bon(?!ce\b)[a-z]+[\"']?\s*:|\.on[a-z]+\s*=|setAttribute\(\s*[\"']on|\.(?:href|src)\s*=")


def test_the_page_builds_text_nodes_only() -> None:
    """Names and labels come from clients (model ids, tags, apps): the script puts them in
    the page as text nodes and attribute values (createElement, textContent, append of a
    string), never through anything that parses markup, code, handlers or links."""
    static = Path(__file__).parents[2] / "proxy" / "admin" / "static"
    script = (static / "dashboard.js").read_text()
    assert "createElement(" in script and ".textContent = " in script  # the scan reads the real script
    found = [(number, line.strip()) for number, line in enumerate(script.splitlines(), 1) if _HTML_SINKS.search(line)]
    assert found == []
    html = (static / "dashboard.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)|\son[a-z]+\s*=", html, re.IGNORECASE)


def test_dashboard_shows_amounts_past_2_to_the_53_pico_usd_exactly(seeded: tuple[Proxy, list[UsageEvent]],
                                                                   page: tuple[Any, list[str]]) -> None:
    """Pico-USD pass JavaScript's exact integers from $9,007.20: the page must not read
    them as numbers (2**53 + 1 would show as …992). The API's answers are replaced
    with amounts that large; the page is the real one. Short on the page, exact in the tooltip."""
    proxy, _ = seeded
    tab, problems = page
    big, quota = 2**53 + 1, 10**22 + 7  # $9,007.199254740993 of $10,000,000,000.000000000007
    row = {"requests": 1, "input_tokens": 2, "output_tokens": 3, "cache_read_tokens": 0, "cache_write_tokens": 0,
           "total_tokens": 5, "estimated_requests": 0, "unpriced_requests": 0, "cache_efficiency": None,
           **usd_fields("cost", big)}
    bodies = {
        "usage": {"days": 1, "since": 0, "by": ["org", "app"], "rows": [{"org": "acme", "app": "chat", "model": MICRO,
                                                                          "day": time.strftime("%Y-%m-%d", time.gmtime()),
                                                                          **row}], "total": row},
        "quotas": {"day": "2025-03-10", "tight_threshold": 0.8, "scopes": [{
            "scope": "acme", "org": "acme", "app": None, "chain": [MICRO], "active_model": MICRO, "fallbacks": [],
            # Quotas by budget leases add what replicas hold: the page shows it when given.
            "models": [{"model": MICRO, **usd_fields("spend", big), **usd_fields("quota", quota), "ratio": big / quota,
                        **usd_fields("leased", 10**12), **usd_fields("remaining", quota - big - 10**12),
                        "mode": "NORMAL", "exhausted": False}]}]},
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
    cost = tab.locator('#apps tr[data-row="acme / chat"] td').last
    sync_api.expect(cost).to_have_attribute("title", "$9007.199254740993")
    sync_api.expect(cost).to_have_text("$9k")
    figures = tab.locator(f'#quotas .quota-row[data-model="{MICRO}"] .figures')
    sync_api.expect(figures).to_have_attribute("title", "spent $9007.199254740993 of $10000000000.000000000007, "
                                               "leased $1.000000, remaining $9999990991.800745259014")
    sync_api.expect(figures).to_contain_text("$9k of $10B · <0.1% · leased $1.00 · left $10B")
    sync_api.expect(tab.locator("#total")).to_have_attribute("title", "$9007.199254740993")
    assert problems == []


def test_each_quota_shows_where_it_comes_from(seeded: tuple[Proxy, list[UsageEvent]],
                                             page: tuple[Any, list[str]]) -> None:
    """A quota from config.yaml says so; one a runtime override set says who set it (issue 22).
    The override keeps acme's `medium` quota at its configured $2, so no other figure moves."""
    proxy, _ = seeded
    overrides, auth = f"{proxy.admin_url}/v1/quotas/overrides", {"authorization": f"Bearer {ADMIN_TOKEN}"}
    put = httpx.put(overrides, headers=auth, json={"org": "acme", "label": "medium", "usd": 2}, timeout=10)
    assert put.status_code == 200, put.text
    try:
        tab, problems = page
        tab.goto(f"{proxy.admin_url}/dashboard?token={ADMIN_TOKEN}")
        configured = tab.locator(f'#quotas .quota-row[data-scope="acme"][data-model="{MICRO}"] .source')
        sync_api.expect(configured).to_have_text("config")
        sync_api.expect(configured).to_have_attribute("title", "from config.yaml")
        overridden = tab.locator(f'#quotas .quota-row[data-scope="acme"][data-model="{LITE}"] .source')
        sync_api.expect(overridden).to_have_text("override")
        sync_api.expect(overridden).to_have_attribute("title", "runtime override, set by admin-token")
        assert problems == []
    finally:
        params = {"org": "acme", "label": "medium"}
        assert httpx.delete(overrides, headers=auth, params=params, timeout=10).status_code == 200
