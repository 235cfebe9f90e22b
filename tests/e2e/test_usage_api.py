"""The usage API on the admin port: its numbers equal the boto3 traffic through a real proxy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from metering.events import UsageEvent
from tests.conftest import TEST_PRICING
from tests.e2e.clients import bedrock_client, wait_for_event
from tests.processes import Process, Proxy, start_proxy

ADMIN_TOKEN = "admin-token-for-usage-api-tests"
MICRO, LITE = "amazon.nova-micro-v1:0", "amazon.nova-lite-v1:0"
USAGE_CONFIG: dict[str, Any] = {
    "pricing": TEST_PRICING,
    "models": {"small": MICRO, "medium": LITE},
    "fallback": ["small", "medium"],
    "orgs": {
        "acme": {"daily_quota_usd": {"small": 1.0, "medium": 2.0}},
        "beta": {"quota_scope": "APP", "daily_quota_usd": {"small": 0.5}, "apps": {"bot": {}}},
    },
}
#: (org, app, prompt) of the seeded traffic.
TRAFFIC = [("acme", "chat", "Hello there."), ("acme", "chat", "Tell me a story."),
           ("acme", "batch", "Summarise this."), ("beta", "bot", "Hi.")]


def start_usage_proxy(tmp: Path, simulator: Process) -> Proxy:
    return start_proxy(tmp, simulator.url, USAGE_CONFIG, env={"COSTKEEPER_ADMIN_TOKEN": ADMIN_TOKEN})


def seed_traffic(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> list[UsageEvent]:
    """The TRAFFIC through boto3 Converse, and the metered events once flushed."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", proxy.url)
    clients: dict[tuple[str, str], Any] = {}
    events = []
    for org, app, prompt in TRAFFIC:
        if (org, app) not in clients:
            clients[org, app] = bedrock_client(proxy.issue_key(org, app))
        response = clients[org, app].converse(modelId="small", messages=[{"role": "user", "content": [{"text": prompt}]}])
        events.append(wait_for_event(proxy, response["ResponseMetadata"]["RequestId"]))
    return events


def admin_get(proxy: Proxy, path: str, token: str | None = ADMIN_TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{proxy.admin_url}{path}", headers=headers, timeout=5)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, simulator: Process) -> Iterator[tuple[Proxy, list[UsageEvent]]]:
    proxy = start_usage_proxy(tmp_path_factory.mktemp("usage-api"), simulator)
    with pytest.MonkeyPatch.context() as monkeypatch:
        events = seed_traffic(proxy, monkeypatch)
    yield proxy, events
    proxy.stop()


@pytest.mark.parametrize("path", ["/v1/usage", "/v1/quotas", f"/v1/rates?model={MICRO}"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {ADMIN_TOKEN}", f"Bearer {ADMIN_TOKEN}x"])
def test_every_endpoint_needs_the_admin_token(seeded: tuple[Proxy, list[UsageEvent]], path: str,
                                              authorization: str | None) -> None:
    proxy, _ = seeded
    response = httpx.get(f"{proxy.admin_url}{path}", timeout=5,
                         headers={} if authorization is None else {"Authorization": authorization})
    assert response.status_code == 401
    assert set(response.json()) == {"message"}


def test_usage_by_org_app_model_equals_the_traffic(seeded: tuple[Proxy, list[UsageEvent]]) -> None:
    proxy, events = seeded
    document = admin_get(proxy, "/v1/usage?days=1&by=org,app,model").json()
    assert document["by"] == ["org", "app", "model"]
    rows = {(row["org"], row["app"], row["model"]): row for row in document["rows"]}
    assert set(rows) == {(org, app, MICRO) for org, app, _ in TRAFFIC}
    for (org, app, _), row in rows.items():
        mine = [event for event in events if (event.org, event.app) == (org, app)]
        assert row["requests"] == len(mine)
        assert row["input_tokens"] == sum(event.input_tokens for event in mine)
        assert row["output_tokens"] == sum(event.output_tokens for event in mine)
        assert row["cost_micro_usd"] == sum(event.cost_micro_usd for event in mine) > 0
        assert row["cost_usd"] == pytest.approx(row["cost_micro_usd"] / 1e6)
        assert row["cache_efficiency"] is None  # no cache reads or writes
    total = document["total"]
    assert total["requests"] == len(TRAFFIC)
    assert total["total_tokens"] == sum(event.input_tokens + event.output_tokens for event in events)


@pytest.mark.parametrize("query", ["days=0", "days=x", "by=org,colour", ""])
def test_bad_parameters_are_400(seeded: tuple[Proxy, list[UsageEvent]], query: str) -> None:
    proxy, _ = seeded
    path = "/v1/rates" if not query else f"/v1/usage?{query}"
    response = admin_get(proxy, path)
    assert response.status_code == 400 and response.json()["message"]


def test_quota_state_per_scope_and_model(seeded: tuple[Proxy, list[UsageEvent]]) -> None:
    proxy, events = seeded
    document = admin_get(proxy, "/v1/quotas").json()
    scopes = {scope["scope"]: scope for scope in document["scopes"]}
    assert set(scopes) == {"acme", "beta/bot"}
    acme = scopes["acme"]
    assert acme["chain"] == [MICRO, LITE] and acme["active_model"] == MICRO
    models = {model["model"]: model for model in acme["models"]}
    spend = sum(event.cost_micro_usd for event in events if event.org == "acme")
    assert models[MICRO]["spend_micro_usd"] == spend > 0
    assert models[MICRO]["quota_micro_usd"] == 1_000_000
    assert models[MICRO]["ratio"] == pytest.approx(spend / 1_000_000)
    assert models[MICRO]["mode"] == "NORMAL" and models[MICRO]["exhausted"] is False
    # What replicas' slices hold beside it (issue #18 item 7): spent + leased + remaining = quota.
    leased = models[MICRO]["leased_micro_usd"]
    assert leased >= 0 and models[MICRO]["remaining_micro_usd"] == 1_000_000 - spend - leased
    assert document["lease_ttl"] == 30.0
    assert models[LITE]["spend_micro_usd"] == 0 and models[LITE]["quota_micro_usd"] == 2_000_000
    bot = {model["model"]: model for model in scopes["beta/bot"]["models"]}
    assert set(bot) == {MICRO}
    assert bot[MICRO]["spend_micro_usd"] == sum(event.cost_micro_usd for event in events if event.org == "beta")
    assert bot[MICRO]["quota_micro_usd"] == 500_000


def test_rates_sum_to_the_traffic(seeded: tuple[Proxy, list[UsageEvent]]) -> None:
    proxy, events = seeded
    document = admin_get(proxy, f"/v1/rates?model={MICRO}&minutes=10").json()
    series = document["series"]
    tokens = sum(event.input_tokens + event.output_tokens for event in events)
    assert sum(point["tpm"] for point in series) == tokens
    assert sum(point["rpm"] for point in series) == len(events)
    for field in ("tpm", "rpm"):
        summary = document[field]
        peak = max(series, key=lambda point: point[field])
        assert summary["overall_peak"]["value"] == peak[field]
        assert summary["overall_peak"]["time"] == peak["time"]
        assert summary["recent_peak_5m"] == peak[field]  # the traffic is seconds old
        assert summary["avg_5m"] == pytest.approx(sum(point[field] for point in series) / 5)
    assert admin_get(proxy, "/v1/rates?model=no.such-model-v1:0").json()["series"] == []
