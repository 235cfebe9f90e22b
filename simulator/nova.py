"""Amazon Nova's native InvokeModel bodies (`schemaVersion: messages-v1`).

Request and response are Converse-shaped but not identical: usage uses only
the `cacheRead/WriteInputTokenCount` spellings, and stream events are wrapped
one per key (`{"contentBlockDelta": {…}}`) inside the `chunk` bytes. Shapes
from openllmetry `test_nova_cross_region_invoke.yaml` and `test_nova_invoke_stream.yaml`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simulator import converse
from simulator.generate import Completion, Prompt, malformed

__all__ = ["parse_request", "response_body", "stream_events"]

_KEYS = frozenset({"schemaVersion", "messages", "system", "inferenceConfig", "toolConfig"})


def parse_request(body: Mapping[str, Any]) -> Prompt:
    if "messages" not in body:
        raise malformed("required key [messages] not found")
    for key in body:
        if key not in _KEYS:
            # e.g. a Claude body sent to a Nova model: Bedrock rejects it the same way.
            raise malformed(f"extraneous key [{key}] is not permitted")
    return converse.prompt_from(body)


def response_body(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> dict[str, Any]:
    usage = completion.usage
    return {
        "output": {"message": {"content": [{"text": completion.text}], "role": "assistant"}},
        "stopReason": completion.stop_reason,
        "usage": {
            "inputTokens": usage.input_tokens,
            "outputTokens": usage.output_tokens,
            "totalTokens": usage.total_tokens,
            "cacheReadInputTokenCount": usage.cache_read_tokens,
            "cacheWriteInputTokenCount": usage.cache_write_tokens,
        },
    }


def stream_events(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> list[dict[str, Any]]:
    """Model-native events; the caller merges `amazon-bedrock-invocationMetrics` into the last."""
    usage = completion.usage
    events: list[dict[str, Any]] = [{"messageStart": {"role": "assistant"}}]
    for delta in completion.deltas:
        events.append({"contentBlockDelta": {"delta": {"text": delta}, "contentBlockIndex": 0}})
    events.append({"contentBlockStop": {"contentBlockIndex": 0}})
    events.append({"messageStop": {"stopReason": completion.stop_reason}})
    events.append({
        "metadata": {
            "usage": {
                "inputTokens": usage.input_tokens,
                "outputTokens": usage.output_tokens,
                "cacheReadInputTokenCount": usage.cache_read_tokens,
                "cacheWriteInputTokenCount": usage.cache_write_tokens,
            },
            "metrics": {},
            "trace": {},
        }
    })
    return events
