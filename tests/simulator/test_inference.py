"""All four inference operations for Nova and Claude through real boto3, parsed by
botocore's own parsers; usage agrees across operations and with CountTokens."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.simulator.harness import (
    CLAUDE,
    MODELS,
    NOVA,
    SimServer,
    claude_body,
    converse_args,
    native_body,
)

FAMILIES = sorted(MODELS)


def _count(bedrock: Any, model: str, **given: Any) -> int:
    base = model.split(".", 1)[1]  # clients strip the geo prefix for CountTokens (§1)
    if "converse" in given:  # CountTokens' converse input has no inferenceConfig
        given = {"converse": {k: v for k, v in given["converse"].items() if k != "inferenceConfig"}}
    return int(bedrock.count_tokens(modelId=base, input=given)["inputTokens"])


@pytest.mark.parametrize("family", FAMILIES)
def test_invoke_model(bedrock: Any, family: str, prompt: str) -> None:
    body = json.dumps(native_body(family, prompt))
    response = bedrock.invoke_model(modelId=MODELS[family], body=body)
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    document = json.loads(response["body"].read())
    assert response["contentType"] == "application/json"
    if family == "anthropic":
        usage = document["usage"]
        text = document["content"][0]["text"]
        assert document["id"].startswith("msg_bdrk_01") and document["type"] == "message"
        assert document["model"] == "claude-haiku-4-5-20251001"
        assert document["stop_reason"] == "end_turn" and document["stop_sequence"] is None
        counts = (usage["input_tokens"], usage["output_tokens"],
                  usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"])
    else:
        usage = document["usage"]
        text = document["output"]["message"]["content"][0]["text"]
        assert document["stopReason"] == "end_turn"
        assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
        counts = (usage["inputTokens"], usage["outputTokens"],
                  usage["cacheReadInputTokenCount"], usage["cacheWriteInputTokenCount"])
    assert counts == (
        int(headers["x-amzn-bedrock-input-token-count"]),
        int(headers["x-amzn-bedrock-output-token-count"]),
        int(headers["x-amzn-bedrock-cache-read-input-token-count"]),
        int(headers["x-amzn-bedrock-cache-write-input-token-count"]),
    )
    assert int(headers["x-amzn-bedrock-invocation-latency"]) >= 1
    assert 50 <= counts[1] <= 100 and len(text.split()) == counts[1]
    assert counts[0] == _count(bedrock, MODELS[family], invokeModel={"body": body})
    assert response["ResponseMetadata"]["RequestId"] == headers["x-amzn-requestid"]


@pytest.mark.parametrize("family", FAMILIES)
def test_invoke_model_with_response_stream(bedrock: Any, family: str, prompt: str) -> None:
    body = json.dumps(native_body(family, prompt, max_tokens=30))
    response = bedrock.invoke_model_with_response_stream(modelId=MODELS[family], body=body)
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["content-type"] == "application/vnd.amazon.eventstream"
    assert headers["x-amzn-bedrock-content-type"] == "application/json"
    assert response["contentType"] == "application/json"
    assert not [name for name in headers if name.endswith("token-count")]
    events = [json.loads(event["chunk"]["bytes"]) for event in response["body"]]
    metrics = events[-1]["amazon-bedrock-invocationMetrics"]
    assert all("amazon-bedrock-invocationMetrics" not in event for event in events[:-1])
    if family == "anthropic":
        kinds = [event["type"] for event in events]
        assert kinds[:2] == ["message_start", "content_block_start"]
        assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        deltas = [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"]
        start_usage = events[0]["message"]["usage"]
        assert start_usage["output_tokens"] == 1
        assert start_usage["input_tokens"] == metrics["inputTokenCount"]
        assert events[-2]["usage"]["output_tokens"] == metrics["outputTokenCount"] == len(deltas)
        assert events[-2]["delta"]["stop_reason"] == "max_tokens"
    else:
        kinds = [next(iter(event)) for event in events]
        assert kinds[0] == "messageStart" and kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"]
        deltas = [e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e]
        usage = events[-1]["metadata"]["usage"]
        assert (usage["inputTokens"], usage["outputTokens"]) == (
            metrics["inputTokenCount"], metrics["outputTokenCount"])
        assert events[-2]["messageStop"]["stopReason"] == "max_tokens"
    assert len(deltas) == metrics["outputTokenCount"] == 30
    assert metrics["cacheReadInputTokenCount"] == metrics["cacheWriteInputTokenCount"] == 0
    assert metrics["invocationLatency"] >= metrics["firstByteLatency"] >= 1
    assert metrics["inputTokenCount"] == _count(bedrock, MODELS[family], invokeModel={"body": body})


@pytest.mark.parametrize("family", FAMILIES)
def test_converse(bedrock: Any, family: str, prompt: str) -> None:
    response = bedrock.converse(modelId=MODELS[family], **converse_args(prompt, max_tokens=500))
    usage = response["usage"]
    text = response["output"]["message"]["content"][0]["text"]
    assert response["output"]["message"]["role"] == "assistant"
    assert response["stopReason"] == "end_turn"
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert "cacheReadInputTokens" not in usage  # only when the request had a cachePoint
    assert len(text.split()) == usage["outputTokens"]
    assert response["metrics"]["latencyMs"] >= 1
    assert usage["inputTokens"] == _count(bedrock, MODELS[family], converse=converse_args(prompt))


@pytest.mark.parametrize("family", FAMILIES)
def test_converse_stream(bedrock: Any, family: str, prompt: str) -> None:
    response = bedrock.converse_stream(modelId=MODELS[family], **converse_args(prompt, max_tokens=25))
    assert response["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/vnd.amazon.eventstream"
    assert "x-amzn-bedrock-content-type" not in response["ResponseMetadata"]["HTTPHeaders"]
    events = list(response["stream"])
    kinds = [next(iter(event)) for event in events]
    assert kinds[0] == "messageStart" and kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert set(kinds[1:-3]) == {"contentBlockDelta"}
    metadata = events[-1]["metadata"]
    assert events[-2]["messageStop"]["stopReason"] == "max_tokens"
    assert metadata["usage"]["outputTokens"] == len(kinds) - 4 == 25
    assert metadata["usage"]["totalTokens"] == metadata["usage"]["inputTokens"] + 25
    assert metadata["metrics"]["latencyMs"] >= 1
    assert metadata["usage"]["inputTokens"] == _count(bedrock, MODELS[family], converse=converse_args(prompt))


@pytest.mark.parametrize("family", FAMILIES)
def test_same_content_same_count_and_text_across_operations(bedrock: Any, family: str, prompt: str) -> None:
    """A native body and its Converse twin are one prompt: same tokens, same answer."""
    native = json.loads(bedrock.invoke_model(modelId=MODELS[family],
                                             body=json.dumps(native_body(family, prompt)))["body"].read())
    conversed = bedrock.converse(modelId=MODELS[family], **converse_args(prompt))
    if family == "anthropic":
        native_text, native_input = native["content"][0]["text"], native["usage"]["input_tokens"]
    else:
        native_text, native_input = native["output"]["message"]["content"][0]["text"], native["usage"]["inputTokens"]
    assert native_text == conversed["output"]["message"]["content"][0]["text"]
    assert native_input == conversed["usage"]["inputTokens"]


def test_output_is_deterministic_and_depends_on_the_prompt(bedrock: Any, prompt: str) -> None:
    def text(p: str) -> str:
        return bedrock.converse(modelId=NOVA, **converse_args(p))["output"]["message"]["content"][0]["text"]

    assert text(prompt) == text(prompt)
    assert text(prompt) != text(prompt + " Please.")


def test_count_tokens_known_value(bedrock: Any) -> None:
    """BEDROCK_WIRE.md §4.1: "Hello, world!" → 11 for Claude; our formula lands on it."""
    given = {"converse": {"messages": [{"role": "user", "content": [{"text": "Hello, world!"}]}], "system": []}}
    assert bedrock.count_tokens(modelId="anthropic.claude-sonnet-4-20250514-v1:0", input=given)["inputTokens"] == 11


@pytest.mark.parametrize("family", FAMILIES)
def test_words_directive_and_max_tokens(bedrock: Any, family: str, prompt: str) -> None:
    exact = bedrock.converse(modelId=MODELS[family], **converse_args(prompt + " [[sim:words=7]]"))
    assert exact["usage"]["outputTokens"] == 7 and exact["stopReason"] == "end_turn"
    assert len(exact["output"]["message"]["content"][0]["text"].split()) == 7
    capped = bedrock.invoke_model(modelId=MODELS[family],
                                  body=json.dumps(native_body(family, prompt + " [[sim:words=40]]", max_tokens=12)))
    document = json.loads(capped["body"].read())
    assert capped["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-output-token-count"] == "12"
    assert (document.get("stop_reason") or document.get("stopReason")) == "max_tokens"


@pytest.mark.parametrize(("model_id", "base_model", "name"), [
    # Claude Haiku 4.5 has no on-demand route (a foundation-model ARN of it is refused,
    # tests/simulator/test_profiles.py): Claude 3 Haiku still has one.
    ("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
     "anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku-20240307"),
    ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-haiku-4-5-20251001-v1:0",
     "anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5-20251001"),
    ("global.anthropic.claude-haiku-4-5-20251001-v1:0", "anthropic.claude-haiku-4-5-20251001-v1:0",
     "claude-haiku-4-5-20251001"),
])
def test_model_id_forms(sim: SimServer, bedrock: Any, model_id: str, base_model: str, name: str, prompt: str) -> None:
    response = bedrock.invoke_model(modelId=model_id, body=json.dumps(claude_body(prompt)))
    assert json.loads(response["body"].read())["model"] == name
    record = sim.record(response["ResponseMetadata"]["RequestId"])
    assert record["model_id"] == model_id
    assert record["base_model"] == base_model
    assert "%3A" in record["path"]  # botocore encodes `:` (and `/` as %2F)


def test_raw_colon_in_path_is_accepted(sim: SimServer, prompt: str) -> None:
    response = sim.post(f"/model/{CLAUDE}/invoke", claude_body(prompt))
    assert response.status_code == 200, response.text
    assert sim.record(response.headers["x-amzn-requestid"])["model_id"] == CLAUDE


@pytest.mark.parametrize("model_id", ["stability.sd3-5-large-v1:0", "amazon.nova-canvas-v1:0"])
def test_unknown_family_on_invoke_model(bedrock: Any, model_id: str) -> None:
    with pytest.raises(bedrock.exceptions.ValidationException, match="model identifier is invalid"):
        bedrock.invoke_model(modelId=model_id, body=b'{"prompt":"Hi"}')


def test_converse_works_for_any_model(bedrock: Any, prompt: str) -> None:
    response = bedrock.converse(modelId="meta.llama3-70b-instruct-v1:0", **converse_args(prompt))
    assert response["usage"]["outputTokens"] > 0


@pytest.mark.parametrize(("model", "body", "message"), [
    (CLAUDE, {"max_tokens": 5, "messages": []}, r"required key \[anthropic_version\] not found"),
    (CLAUDE, {**claude_body("x"), "stream": True}, r"extraneous key \[stream\] is not permitted"),
    (NOVA, claude_body("x"), r"extraneous key \[anthropic_version\] is not permitted"),
    (NOVA, {"inferenceConfig": {}}, r"required key \[messages\] not found"),
    (CLAUDE, b"not json", "Malformed input request"),
])
def test_malformed_native_bodies(bedrock: Any, model: str, body: Any, message: str) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body)
    with pytest.raises(bedrock.exceptions.ValidationException, match=message):
        bedrock.invoke_model(modelId=model, body=data)


def test_performance_headers_are_echoed(bedrock: Any, prompt: str) -> None:
    response = bedrock.invoke_model(modelId=NOVA, body=json.dumps(native_body("nova", prompt)),
                                    performanceConfigLatency="optimized", serviceTier="priority")
    assert response["performanceConfigLatency"] == "optimized"
    assert response["serviceTier"] == "priority"
