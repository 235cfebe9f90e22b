"""Quotas and fallback through boto3 against a real proxy process and the simulator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import pytest

from metering.pricing import Price
from tests.conftest import TEST_PRICING
from tests.e2e.clients import bedrock_client, refusal_lines, wait_for_event
from tests.processes import Process, Proxy, costkeeper, start_proxy

PRO, LITE, MICRO = "amazon.nova-pro-v1:0", "amazon.nova-lite-v1:0", "amazon.nova-micro-v1:0"
PRICING = {**TEST_PRICING, PRO: {"input": 0.8, "output": 3.2, "cache_read": 0.2}}
MESSAGES = [{"role": "user", "content": [{"text": "Summarise the plot of Hamlet."}]}]
APP_PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/teamchat01"


@pytest.fixture(scope="module")
def quota_proxy(tmp_path_factory: pytest.TempPathFactory, simulator: Process) -> Iterator[Proxy]:
    """Tiny quotas so a few requests exhaust them: premium ≈ 2 requests, standard ≈ 3."""
    config = {
        "pricing": PRICING,
        "models": {"premium": PRO, "standard": LITE, "economy": MICRO},
        "fallback": ["premium", "standard"],
        "inference_profiles": {APP_PROFILE: MICRO},
        "orgs": {
            "acme": {
                "quota_scope": "APP",
                "daily_quota_usd": {"premium": 0.0004, "standard": 0.00006},
                "apps": {
                    "capped": {"max_output_tokens": 7, "allowed_models": ["premium", "standard", "economy"],
                               "response_cache": {"ttl": 60}},
                    "limited": {"fallback": ["economy"], "rate_limits": {"economy": {"rpm": 2}}},
                    # Room for several requests' worst cases (budget leases admit by them).
                    "cached": {"response_cache": {"ttl": 600}, "daily_quota_usd": {"premium": 0.002}},
                },
            },
        },
    }
    proxy = start_proxy(tmp_path_factory.mktemp("quota"), simulator.url, config)
    yield proxy
    proxy.stop()


@pytest.fixture
def client_for(quota_proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", quota_proxy.url)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")

    def make(app: str) -> Any:
        return bedrock_client(quota_proxy.issue_key("acme", app))

    return make


def _headers(response: dict[str, Any]) -> dict[str, str]:
    return response["ResponseMetadata"]["HTTPHeaders"]  # type: ignore[no-any-return]


def test_quota_exhausted_falls_back_then_refuses(client_for: Any, quota_proxy: Proxy) -> None:
    client = client_for("chat")
    served: list[tuple[str, str, str]] = []
    with pytest.raises(client.exceptions.ServiceQuotaExceededException) as raised:
        for _ in range(40):
            response = client.converse(modelId="premium", messages=MESSAGES, inferenceConfig={"maxTokens": 60})
            headers = _headers(response)
            served.append((headers["x-costkeeper-model-id"], headers["x-costkeeper-fallback"],
                           headers["x-costkeeper-mode"]))
            wait_for_event(quota_proxy, response["ResponseMetadata"]["RequestId"])
            time.sleep(0.25)  # let the spend reach the store and the cache (NORMAL TTL 0.2 s)
    models = [model for model, _, _ in served]
    assert models[0] == PRO and LITE in models
    first_lite = models.index(LITE)
    assert set(models[first_lite:]) == {LITE}  # sticky: never back to premium today
    assert all(fallback == "true" for model, fallback, _ in served if model == LITE)
    assert all(fallback == "false" for model, fallback, _ in served if model == PRO)
    assert {mode for _, _, mode in served} <= {"NORMAL", "TIGHT"}
    error = raised.value.response
    metrics = httpx.get(f"{quota_proxy.admin_url}/metrics", timeout=5).text
    assert f'costkeeper_quota_use_ratio{{model="{LITE}",scope="acme/chat"}}' in metrics
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["ResponseMetadata"].get("RetryAttempts", 0) == 0  # SDKs do not retry it
    assert "acme/chat" in error["Error"]["Message"] and "00:00 UTC" in error["Error"]["Message"]


def test_boto3_default_retries_do_not_retry_quota_errors(client_for: Any, quota_proxy: Proxy,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    import botocore.config

    key = quota_proxy.issue_key("acme", "chat")  # same app: its quota is spent by the test above
    client = boto3.session.Session(
        aws_access_key_id=key["AWS_ACCESS_KEY_ID"], aws_secret_access_key=key["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1").client("bedrock-runtime",
                                        config=botocore.config.Config(retries={"mode": "standard", "max_attempts": 5}))
    started = time.monotonic()
    with pytest.raises(client.exceptions.ServiceQuotaExceededException) as raised:
        client.converse(modelId="premium", messages=MESSAGES)
    assert raised.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    assert time.monotonic() - started < 2


def test_max_output_tokens_is_clamped_and_allowed_models_enforced(client_for: Any, quota_proxy: Proxy) -> None:
    client = client_for("capped")
    response = client.converse(modelId="economy", messages=MESSAGES, inferenceConfig={"maxTokens": 500})
    assert response["usage"]["outputTokens"] <= 7 and response["stopReason"] == "max_tokens"
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    with pytest.raises(client.exceptions.AccessDeniedException, match="don't have access") as refused:
        client.invoke_model(modelId="anthropic.claude-haiku-4-5-20251001-v1:0", body=body)
    # A policy's 403 leaves an access-log line too, naming the key and the app.
    request_id = refused.value.response["ResponseMetadata"]["RequestId"]
    line = next(line for line in refusal_lines(quota_proxy, 1) if line["request_id"] == request_id)
    assert (line["reason"], line["org"], line["app"], line["error"]) == (
        "not_allowed", "acme", "capped", "AccessDeniedException")


def test_response_cache_serves_repeats_at_no_cost(client_for: Any, quota_proxy: Proxy) -> None:
    client = client_for("capped")
    messages = [{"role": "user", "content": [{"text": "Cache me: what is 6 times 7?"}]}]
    first = client.converse(modelId="economy", messages=messages)
    second = client.converse(modelId="economy", messages=messages)
    assert second["output"] == first["output"] and second["usage"] == first["usage"]
    assert _headers(second).get("x-costkeeper-cache") == "hit" and "x-costkeeper-cache" not in _headers(first)
    assert second["ResponseMetadata"]["RequestId"] != first["ResponseMetadata"]["RequestId"]
    original = wait_for_event(quota_proxy, first["ResponseMetadata"]["RequestId"])
    cached = wait_for_event(quota_proxy, second["ResponseMetadata"]["RequestId"])
    assert original.cost_pico_usd > 0 and not original.cached
    assert cached.cached and cached.cost_pico_usd == 0 and cached.input_tokens == 0
    different = client.converse(modelId="economy", messages=[{"role": "user", "content": [{"text": "other"}]}])
    assert "x-costkeeper-cache" not in _headers(different)


def test_a_cache_hit_says_what_a_fresh_request_would(client_for: Any, quota_proxy: Proxy) -> None:
    """Premium's answer is cached, then premium's quota is spent: the repeat is served
    by the fallback as a fresh request would be — not premium's cached answer saying
    `fallback: false` — and its own repeat is a hit that says `fallback: true`
    (tests/proxy/test_cache_headers.py checks the mode)."""
    client = client_for("cached")
    question = [{"role": "user", "content": [{"text": "Cache me: name a prime number."}]}]

    def ask(messages: list[dict[str, Any]]) -> dict[str, str]:
        response = client.converse(modelId="premium", messages=messages, inferenceConfig={"maxTokens": 60})
        wait_for_event(quota_proxy, response["ResponseMetadata"]["RequestId"])
        return _headers(response)

    def says(headers: dict[str, str]) -> tuple[str, str, bool]:
        return headers["x-costkeeper-model-id"], headers["x-costkeeper-fallback"], "x-costkeeper-cache" in headers

    assert says(ask(question)) == (PRO, "false", False)
    assert says(ask(question)) == (PRO, "false", True)
    # Spend premium's quota with other, shorter questions: once their worst case no longer
    # fits what is left, the cached question's (no smaller) does not either.
    for number in range(60):
        other = ask([{"role": "user", "content": [{"text": f"Q{number}: a colour?"}]}])
        if other["x-costkeeper-model-id"] == LITE:
            break
    else:
        pytest.fail("premium's quota was never spent")
    assert says(ask(question)) == (LITE, "true", False)
    again = ask(question)
    assert says(again) == (LITE, "true", True) and again["x-costkeeper-mode"] in ("NORMAL", "TIGHT")


def test_rate_limit_is_a_throttling_exception(client_for: Any) -> None:
    client = client_for("limited")
    for _ in range(2):
        client.converse(modelId="economy", messages=MESSAGES)
    with pytest.raises(client.exceptions.ThrottlingException, match="2 requests per minute"):
        client.converse(modelId="economy", messages=MESSAGES)


def test_label_in_path_is_rewritten_for_the_upstream(client_for: Any, simulator: Process) -> None:
    client = client_for("labels")
    response = client.converse(modelId="economy", messages=MESSAGES)
    assert _headers(response)["x-costkeeper-model-id"] == MICRO
    seen = httpx.get(f"{simulator.url}/_sim/requests", timeout=5).json()
    assert any(r.get("model_id") == MICRO and r.get("operation") == "Converse" for r in seen)


def test_config_refusing_a_bad_chain_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"pricing": PRICING, "models": {"premium": PRO}, "fallback": ["premium", "platinum"]}))
    result = costkeeper("serve", "--config", str(path), check=False)
    assert result.returncode == 2
    assert "fallback: unknown label 'platinum'" in result.stderr


def test_cost_of_each_request_lands_on_the_served_model(client_for: Any, quota_proxy: Proxy) -> None:
    client = client_for("billing")
    # Its worst case (input bound + 20 output tokens) fits standard's tiny quota; the model's
    # default of 4,096 output tokens would not.
    response = client.converse(modelId="standard", messages=MESSAGES, inferenceConfig={"maxTokens": 20})
    event = wait_for_event(quota_proxy, response["ResponseMetadata"]["RequestId"])
    assert (event.requested_model, event.model, event.quota_scope) == ("standard", LITE, "acme/billing")
    price = Price.from_mapping(LITE, PRICING[LITE])  # pico-USD per token, exact
    assert event.cost_pico_usd == event.input_tokens * price.input + event.output_tokens * price.output
    with pytest.raises(botocore.exceptions.ClientError):
        client.converse(modelId="premium", messages=[{"role": "user", "content": [{"text": "[[sim:validation]]"}]}])


def test_application_inference_profile_is_priced_as_its_base_model(client_for: Any, quota_proxy: Proxy) -> None:
    client = client_for("profiles")
    response = client.converse(modelId=APP_PROFILE, messages=MESSAGES)
    event = wait_for_event(quota_proxy, response["ResponseMetadata"]["RequestId"])
    price = Price.from_mapping(MICRO, PRICING[MICRO])
    assert event.model == APP_PROFILE and event.priced
    assert event.cost_pico_usd == event.input_tokens * price.input + event.output_tokens * price.output
