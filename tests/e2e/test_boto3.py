"""boto3 through the proxy, all four inference operations, both families, parsed by
botocore's own parsers; every request metered with the tokens the upstream reported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.clients import MODELS, bedrock_client, invoke_body, wait_for_event
from tests.processes import Proxy

FAMILIES = sorted(MODELS)


@pytest.fixture
def client(proxy: Proxy, caller_key: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", proxy.url)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    bedrock = bedrock_client(caller_key)
    yield bedrock
    bedrock.close()


def _messages(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": prompt}]}]


@pytest.mark.parametrize("family", FAMILIES)
def test_converse(client: Any, proxy: Proxy, family: str) -> None:
    model = MODELS[family]
    response = client.converse(
        modelId=model, messages=_messages("What is the capital of France?"), inferenceConfig={"maxTokens": 30}
    )
    assert client.meta.endpoint_url == proxy.url
    usage = response["usage"]
    assert usage["inputTokens"] > 0 and 0 < usage["outputTokens"] <= 30
    assert response["output"]["message"]["content"][0]["text"]
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-costkeeper-model-id"] == model
    event = wait_for_event(proxy, response["ResponseMetadata"]["RequestId"])
    assert (event.org, event.app, event.model, event.operation) == ("acme", "chatbot", model, "Converse")
    assert (event.input_tokens, event.output_tokens) == (usage["inputTokens"], usage["outputTokens"])
    assert event.priced and event.cost_pico_usd > 0 and not event.estimated


@pytest.mark.parametrize("family", FAMILIES)
def test_converse_stream(client: Any, proxy: Proxy, family: str) -> None:
    model = MODELS[family]
    response = client.converse_stream(
        modelId=model, messages=_messages("Tell me a story."), inferenceConfig={"maxTokens": 25}
    )
    kinds: list[str] = []
    text = ""
    metadata: dict[str, Any] = {}
    for event in response["stream"]:
        (kind, body), = event.items()
        kinds.append(kind)
        if kind == "contentBlockDelta":
            text += body["delta"]["text"]
        if kind == "metadata":
            metadata = body
    assert kinds[0] == "messageStart" and kinds[-1] == "metadata" and "messageStop" in kinds
    usage = metadata["usage"]
    assert text and 0 < usage["outputTokens"] <= 25
    event = wait_for_event(proxy, response["ResponseMetadata"]["RequestId"])
    assert event.operation == "ConverseStream" and not event.estimated
    assert (event.input_tokens, event.output_tokens) == (usage["inputTokens"], usage["outputTokens"])
    assert event.first_byte_ms is not None and event.first_byte_ms <= event.latency_ms


@pytest.mark.parametrize("family", FAMILIES)
def test_invoke_model(client: Any, proxy: Proxy, family: str) -> None:
    model = MODELS[family]
    response = client.invoke_model(
        modelId=model, body=invoke_body(family, "Name three rivers."), contentType="application/json"
    )
    document = json.loads(response["body"].read())
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    if family == "anthropic":
        reported = (document["usage"]["input_tokens"], document["usage"]["output_tokens"])
        assert document["type"] == "message" and document["content"][0]["type"] == "text"
    else:
        reported = (document["usage"]["inputTokens"], document["usage"]["outputTokens"])
        assert document["output"]["message"]["role"] == "assistant"
    # The upstream's usage headers reach the client unchanged.
    assert int(headers["x-amzn-bedrock-input-token-count"]) == reported[0]
    assert int(headers["x-amzn-bedrock-output-token-count"]) == reported[1]
    event = wait_for_event(proxy, response["ResponseMetadata"]["RequestId"])
    assert event.operation == "InvokeModel"
    assert (event.input_tokens, event.output_tokens) == reported


@pytest.mark.parametrize("family", FAMILIES)
def test_invoke_model_with_response_stream(client: Any, proxy: Proxy, family: str) -> None:
    model = MODELS[family]
    response = client.invoke_model_with_response_stream(
        modelId=model, body=invoke_body(family, "Count to ten.", max_tokens=20)
    )
    assert response["contentType"] == "application/json"
    chunks = [json.loads(event["chunk"]["bytes"]) for event in response["body"]]
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    if family == "anthropic":
        assert [c["type"] for c in chunks][:2] == ["message_start", "content_block_start"]
        assert chunks[-1]["type"] == "message_stop"
    else:
        assert "messageStart" in chunks[0] and "metadata" in chunks[-1]
    event = wait_for_event(proxy, response["ResponseMetadata"]["RequestId"])
    assert event.operation == "InvokeModelWithResponseStream" and not event.estimated
    assert (event.input_tokens, event.output_tokens) == (metrics["inputTokenCount"], metrics["outputTokenCount"])


def test_count_tokens_passes_through_and_apply_guardrail_needs_allowing(client: Any) -> None:
    counted = client.count_tokens(
        modelId="anthropic.claude-sonnet-4-5-20250929-v1:0",
        input={"converse": {"messages": _messages("Hello, world!")}},
    )
    assert counted["inputTokens"] > 0
    # Not an inference operation: refused unless `allowed_operations` names it
    # (allowed and metered: tests/e2e/test_governed_operations.py).
    with pytest.raises(client.exceptions.AccessDeniedException, match="ApplyGuardrail"):
        client.apply_guardrail(
            guardrailIdentifier="gr1", guardrailVersion="1", source="INPUT", content=[{"text": {"text": "hi"}}]
        )


def test_arn_and_raw_model_ids_route(client: Any, proxy: Proxy) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-micro-v1:0"
    response = client.converse(modelId=arn, messages=_messages("hi"))
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-costkeeper-model-id"] == arn
    event = wait_for_event(proxy, response["ResponseMetadata"]["RequestId"])
    assert event.model == arn and event.priced  # priced through its base model
