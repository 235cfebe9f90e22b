"""Prompt caching with Bedrock's accounting: first a write, then a read, and
`inputTokens` never includes cached tokens (BEDROCK_WIRE.md §3.4)."""

from __future__ import annotations

import json
from typing import Any

from tests.simulator.harness import CLAUDE, NOVA, SimServer, claude_body


def _converse_args(prompt: str, question: str) -> dict[str, Any]:
    return {
        "system": [{"text": "Shared instructions. " * 40 + prompt}, {"cachePoint": {"type": "default"}}],
        "messages": [{"role": "user", "content": [{"text": question}]}],
        "inferenceConfig": {"maxTokens": 10},
    }


def test_converse_cache_write_then_read(bedrock: Any, prompt: str) -> None:
    first = bedrock.converse(modelId=CLAUDE, **_converse_args(prompt, "What is 10 + 11?"))["usage"]
    second = bedrock.converse(modelId=CLAUDE, **_converse_args(prompt, "And 2 + 2?"))["usage"]
    assert first["cacheReadInputTokens"] == 0 and first["cacheWriteInputTokens"] > 0
    assert second["cacheReadInputTokens"] == first["cacheWriteInputTokens"]
    assert second["cacheWriteInputTokens"] == 0
    for usage in (first, second):
        assert usage["totalTokens"] == (usage["inputTokens"] + usage["outputTokens"]
                                        + usage["cacheReadInputTokens"] + usage["cacheWriteInputTokens"])
    whole = bedrock.count_tokens(modelId=CLAUDE.removeprefix("us."), input={"converse": {
        k: v for k, v in _converse_args(prompt, "And 2 + 2?").items() if k != "inferenceConfig"}})
    assert whole["inputTokens"] == second["inputTokens"] + second["cacheReadInputTokens"]


def test_converse_stream_reports_cache_in_metadata(bedrock: Any, prompt: str) -> None:
    bedrock.converse(modelId=NOVA, **_converse_args(prompt, "Warm it up."))
    response = bedrock.converse_stream(modelId=NOVA, **_converse_args(prompt, "Now stream."))
    usage = list(response["stream"])[-1]["metadata"]["usage"]
    assert usage["cacheReadInputTokens"] > 0 and usage["cacheWriteInputTokens"] == 0


def test_cache_is_per_model(bedrock: Any, prompt: str) -> None:
    bedrock.converse(modelId=NOVA, **_converse_args(prompt, "Q"))
    other = bedrock.converse(modelId="amazon.nova-micro-v1:0", **_converse_args(prompt, "Q"))["usage"]
    assert other["cacheReadInputTokens"] == 0 and other["cacheWriteInputTokens"] > 0


def test_nova_native_cache_point(bedrock: Any, prompt: str) -> None:
    def invoke(question: str) -> tuple[dict[str, Any], dict[str, str]]:
        body = {
            "system": [{"text": "Long shared context. " * 40 + prompt}, {"cachePoint": {"type": "default"}}],
            "messages": [{"role": "user", "content": [{"text": question}]}],
            "inferenceConfig": {"maxTokens": 5},
        }
        response = bedrock.invoke_model(modelId=NOVA, body=json.dumps(body))
        return json.loads(response["body"].read())["usage"], response["ResponseMetadata"]["HTTPHeaders"]

    (first, first_headers), (second, second_headers) = invoke("One"), invoke("Two")
    assert first["cacheWriteInputTokenCount"] > 0 and first["cacheReadInputTokenCount"] == 0
    assert second["cacheReadInputTokenCount"] == first["cacheWriteInputTokenCount"]
    assert second_headers["x-amzn-bedrock-cache-read-input-token-count"] == str(second["cacheReadInputTokenCount"])
    assert first_headers["x-amzn-bedrock-cache-write-input-token-count"] == str(first["cacheWriteInputTokenCount"])


def test_claude_stream_cache_tokens_in_invocation_metrics(sim: SimServer, bedrock: Any, prompt: str) -> None:
    body = claude_body("question", max_tokens=5, system=[
        {"type": "text", "text": "Cached part. " * 40 + prompt, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ])
    first = json.loads(bedrock.invoke_model(modelId=CLAUDE, body=json.dumps(body))["body"].read())["usage"]
    assert first["cache_creation"] == {"ephemeral_5m_input_tokens": 0,
                                       "ephemeral_1h_input_tokens": first["cache_creation_input_tokens"]}
    response = bedrock.invoke_model_with_response_stream(modelId=CLAUDE, body=json.dumps(body))
    events = [json.loads(event["chunk"]["bytes"]) for event in response["body"]]
    start_usage = events[0]["message"]["usage"]
    metrics = events[-1]["amazon-bedrock-invocationMetrics"]
    assert start_usage["cache_read_input_tokens"] == metrics["cacheReadInputTokenCount"]
    assert metrics["cacheReadInputTokenCount"] == first["cache_creation_input_tokens"]
    assert metrics["cacheWriteInputTokenCount"] == 0
    record = sim.record(response["ResponseMetadata"]["RequestId"])
    assert record["usage"]["cache_read_tokens"] == metrics["cacheReadInputTokenCount"]


def test_reset_forgets_the_cache(make_sim: Any, prompt: str) -> None:
    server = make_sim()
    client = server.client()
    client.converse(modelId=NOVA, **_converse_args(prompt, "Q"))
    server.http.post(f"{server.url}/_sim/reset")
    usage = client.converse(modelId=NOVA, **_converse_args(prompt, "Q"))["usage"]
    assert usage["cacheReadInputTokens"] == 0 and usage["cacheWriteInputTokens"] > 0
    assert len(server.requests()) == 1
