"""The usage API on the admin port: its numbers equal the boto3 traffic through a real proxy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from prometheus_client.parser import text_string_to_metric_families

from adapters.modelid import base_model_id
from metering.events import UsageEvent
from metering.money import micro_from_pico
from tests.conftest import TEST_PRICING
from tests.e2e.clients import bedrock_client, refusal_lines, wait_for_event
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


def seed_refusals(proxy: Proxy) -> dict[str, str]:
    """Refused requests of several kinds: three bad signatures from one real key, an
    unknown key, no credentials, a bearer token over plain HTTP. The key they used."""
    key = proxy.issue_key("acme", "leaky")
    url = f"{proxy.url}/model/{MICRO}/converse"
    body = json.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}).encode()

    def sigv4(key_id: str, secret: str) -> httpx.Response:
        request = AWSRequest("POST", url, data=body, headers={"Content-Type": "application/json"})
        SigV4Auth(Credentials(key_id, secret), "bedrock", "us-east-1").add_auth(request)
        return httpx.post(url, content=body, headers=dict(request.headers.items()), timeout=10)

    responses = [sigv4(key["AWS_ACCESS_KEY_ID"], "not-the-secret") for _ in range(3)]
    responses.append(sigv4("CKIAUNKNOWNKEY000000", "x" * 40))
    responses.append(httpx.post(url, content=body, timeout=10))
    responses.append(httpx.post(url, content=body, timeout=10,
                                headers={"Authorization": f"Bearer {key['AWS_BEARER_TOKEN_BEDROCK']}"}))
    assert [response.status_code for response in responses] == [403] * 6
    return key


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


@pytest.mark.parametrize("path", ["/v1/usage", "/v1/quotas", f"/v1/rates?model={MICRO}", "/v1/auth-failures"])
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
        assert row["cost_pico_usd"] == sum(event.cost_pico_usd for event in mine) > 0
        assert row["cost_usd"] == pytest.approx(row["cost_pico_usd"] / 1e12)
        # Kept for readers of the API before issue #16: rounded to whole micro-USD.
        assert row["cost_micro_usd"] == micro_from_pico(row["cost_pico_usd"])
        assert row["cache_efficiency"] is None  # no cache reads or writes
    total = document["total"]
    assert total["requests"] == len(TRAFFIC)
    assert total["total_tokens"] == sum(event.input_tokens + event.output_tokens for event in events)


def test_usage_by_base_model(seeded: tuple[Proxy, list[UsageEvent]]) -> None:
    """`by=base_model` (issue #16 4c): the model without geo/global prefix or ARN; the
    folding of profiles into their base model is in tests/metering/test_store_contract.py."""
    proxy, events = seeded
    document = admin_get(proxy, "/v1/usage?days=1&by=org,base_model").json()
    assert document["by"] == ["org", "base_model"]
    rows = {(row["org"], row["base_model"]): row for row in document["rows"]}
    assert set(rows) == {(org, base_model_id(event.model)) for event in events for org in [event.org]}
    for (org, _), row in rows.items():
        assert row["cost_pico_usd"] == sum(event.cost_pico_usd for event in events if event.org == org)
        assert "model" not in row


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
    spend = sum(event.cost_pico_usd for event in events if event.org == "acme")
    assert models[MICRO]["spend_pico_usd"] == spend > 0
    assert models[MICRO]["spend_usd"] == pytest.approx(spend / 1e12)
    assert models[MICRO]["spend_micro_usd"] == micro_from_pico(spend)  # as before issue #16
    assert (models[MICRO]["quota_pico_usd"], models[MICRO]["quota_micro_usd"]) == (10**12, 1_000_000)
    assert models[MICRO]["quota_usd"] == 1.0
    assert models[MICRO]["ratio"] == pytest.approx(spend / 10**12)
    assert models[MICRO]["mode"] == "NORMAL" and models[MICRO]["exhausted"] is False
    # What replicas' slices hold beside it (issue #18 item 7): spent + leased + remaining = quota.
    leased = models[MICRO]["leased_pico_usd"]
    assert leased >= 0 and models[MICRO]["remaining_pico_usd"] == 10**12 - spend - leased
    assert models[MICRO]["remaining_usd"] == pytest.approx((10**12 - spend - leased) / 1e12)
    assert document["lease_ttl"] == 30.0
    assert models[LITE]["spend_pico_usd"] == 0 and models[LITE]["quota_pico_usd"] == 2 * 10**12
    bot = {model["model"]: model for model in scopes["beta/bot"]["models"]}
    assert set(bot) == {MICRO}
    assert bot[MICRO]["spend_pico_usd"] == sum(event.cost_pico_usd for event in events if event.org == "beta")
    assert bot[MICRO]["quota_pico_usd"] == 5 * 10**11


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
        # Traffic that spans a minute boundary (a busy machine) can tie two minutes: either is the peak.
        assert summary["overall_peak"]["time"] in {point["time"] for point in series if point[field] == peak[field]}
        assert summary["recent_peak_5m"] == peak[field]  # the traffic is seconds old
        assert summary["avg_5m"] == pytest.approx(sum(point[field] for point in series) / 5)
    assert admin_get(proxy, "/v1/rates?model=no.such-model-v1:0").json()["series"] == []


def test_refusals_are_logged_counted_and_tallied_by_key(seeded: tuple[Proxy, list[UsageEvent]]) -> None:
    """Every 403: an access-log line naming the access key id (never a secret), a count in
    `costkeeper_auth_failures_total{reason}`, and a row of `/v1/auth-failures` by key and reason."""
    proxy, _ = seeded
    key = seed_refusals(proxy)
    key_id = key["AWS_ACCESS_KEY_ID"]
    lines = refusal_lines(proxy, 6)
    assert sorted((line["access_key_id"] or "", line["reason"]) for line in lines) == sorted([
        (key_id, "bad_signature"), (key_id, "bad_signature"), (key_id, "bad_signature"),
        ("CKIAUNKNOWNKEY000000", "unknown_key"), ("", "missing"), (key_id, "bearer_over_http")])
    assert all(line["status"] == 403 and line["request_id"] and line["client"] == "127.0.0.1" for line in lines)
    assert {(line["org"], line["app"]) for line in lines if line["reason"] == "bad_signature"} == {("acme", "leaky")}

    metrics = httpx.get(f"{proxy.admin_url}/metrics", timeout=5).text
    counts = {sample.labels["reason"]: sample.value for family in text_string_to_metric_families(metrics)
              for sample in family.samples if sample.name == "costkeeper_auth_failures_total"}
    assert counts == {"bad_signature": 3, "unknown_key": 1, "missing": 1, "bearer_over_http": 1}

    document = admin_get(proxy, "/v1/auth-failures").json()
    assert document["window_minutes"] == 60 and document["total"] == 6
    first = document["rows"][0]
    assert (first["access_key_id"], first["reason"], first["count"], first["org"], first["app"]) == (
        key_id, "bad_signature", 3, "acme", "leaky")
    everything = proxy.output() + metrics + json.dumps(document)
    assert key["AWS_SECRET_ACCESS_KEY"] not in everything and "x" * 40 not in everything
