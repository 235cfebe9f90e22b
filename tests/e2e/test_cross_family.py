"""Fallback across model families: the client's own SDK parses what another family produced."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import TEST_PRICING
from tests.e2e.clients import bedrock_client, wait_for_event
from tests.processes import Process, Proxy, start_proxy

#: Claude Haiku 4.5 is served only through inference profiles (BEDROCK_WIRE.md §1.2).
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
NOVA = "amazon.nova-lite-v1:0"
#: A `us.` Claude request falls back to Nova in the same routing scope (issue #16).
NOVA_US = f"us.{NOVA}"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, simulator: Process) -> Iterator[Proxy]:
    """Claude's quota is 0 for org `acme`: every Claude request is served by Nova, and back."""
    config = {
        "pricing": TEST_PRICING,
        "models": {"smart": CLAUDE, "cheap": NOVA},
        "fallback": ["smart", "cheap"],
        "orgs": {
            "acme": {"daily_quota_usd": {"smart": 0}},
            "novas": {"fallback": ["cheap", "smart"], "daily_quota_usd": {"cheap": 0}},
        },
    }
    process = start_proxy(tmp_path_factory.mktemp("xfamily"), simulator.url, config)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def key(proxy: Proxy) -> dict[str, str]:
    return proxy.issue_key("acme", "claude-app")


def _anthropic(proxy: Proxy, key: dict[str, str]) -> anthropic.AnthropicBedrock:
    return anthropic.AnthropicBedrock(base_url=proxy.url, aws_access_key=key["AWS_ACCESS_KEY_ID"],
                                      aws_secret_key=key["AWS_SECRET_ACCESS_KEY"], aws_region="us-east-1",
                                      max_retries=0)


def test_anthropic_sdk_stream_served_by_nova(proxy: Proxy, key: dict[str, str]) -> None:
    client = _anthropic(proxy, key)
    with client.messages.stream(
        model=CLAUDE, max_tokens=25, system="Be brief.",
        messages=[{"role": "user", "content": "Tell me about rivers."}],
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
        headers = stream.response.headers
    assert headers["x-costkeeper-model-id"] == NOVA_US and headers["x-costkeeper-fallback"] == "true"
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_delta" in events and "message_delta" in events
    assert final.content[0].type == "text" and final.content[0].text
    assert final.stop_reason in ("end_turn", "max_tokens")
    event = wait_for_event(proxy, headers["x-amzn-requestid"])
    assert (event.requested_model, event.model, event.estimated) == (CLAUDE, NOVA_US, False)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (event.input_tokens, event.output_tokens)
    assert event.output_tokens > 0 and event.cost_pico_usd > 0


def test_anthropic_sdk_create_served_by_nova(proxy: Proxy, key: dict[str, str]) -> None:
    raw = _anthropic(proxy, key).messages.with_raw_response.create(
        model=CLAUDE, max_tokens=20, messages=[{"role": "user", "content": "Hello there"}]
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.content[0].text
    event = wait_for_event(proxy, raw.headers["x-amzn-requestid"])
    assert event.model == NOVA_US
    assert (message.usage.input_tokens, message.usage.output_tokens) == (event.input_tokens, event.output_tokens)


def test_boto3_nova_body_served_by_claude(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", proxy.url)
    client = bedrock_client(proxy.issue_key("novas", "app"))
    body = json.dumps({"messages": [{"role": "user", "content": [{"text": "Name a colour."}]}],
                       "inferenceConfig": {"maxTokens": 15}}).encode()
    response = client.invoke_model(modelId=NOVA, body=body)
    document = json.loads(response["body"].read())
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-costkeeper-model-id"] == CLAUDE
    assert document["output"]["message"]["content"][0]["text"]
    assert document["usage"]["outputTokens"] > 0
    streamed = client.invoke_model_with_response_stream(modelId=NOVA, body=body)
    chunks = [json.loads(e["chunk"]["bytes"]) for e in streamed["body"]]
    assert "messageStart" in chunks[0] and "metadata" in chunks[-1]
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] > 0
    event = wait_for_event(proxy, streamed["ResponseMetadata"]["RequestId"])
    assert event.model == CLAUDE and not event.estimated


def test_converse_fallback_drops_fields_the_target_refuses(proxy: Proxy, key: dict[str, str], simulator: Process,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", proxy.url)
    client: Any = bedrock_client(key)
    marker = uuid.uuid4().hex
    response = client.converse(
        modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": f"hi {marker}"}]}],
        additionalModelRequestFields={"top_k": 5, "anthropic_beta": ["context-1m-2025-08-07"]},
    )
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-costkeeper-model-id"] == NOVA_US
    assert response["output"]["message"]["content"][0]["text"]
    seen = httpx.get(f"{simulator.url}/_sim/requests", timeout=5).json()
    sent = json.loads(next(r["body"] for r in seen if marker in r.get("body", "")))
    assert "anthropic_beta" not in json.dumps(sent)
    assert sent["additionalModelRequestFields"] == {"inferenceConfig": {"topK": 5}}  # Claude top_k → Nova topK
