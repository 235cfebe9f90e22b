"""Converse / ConverseStream: the model-agnostic API, for any model id.

Shapes follow the recordings (BEDROCK_WIRE.md §3.4, §4.1): bodies with keys in
alphabetical order as Bedrock serialises them, cache fields in `usage` only when
the request had a `cachePoint`, and both spellings of those fields
(`cacheReadInputTokens` and the legacy `cacheReadInputTokenCount`).
The content-block walker is shared with Nova, whose native body is Converse-shaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.usage import Usage
from proxy.errors import ValidationException
from simulator.generate import Completion, Prompt, PromptBuilder, malformed

__all__ = ["parse_request", "prompt_from", "add_blocks", "response_body", "stream_events", "usage_fields"]

_MEDIA = ("image", "document", "video", "audio")
_NO_USER_MESSAGE = (
    "A conversation must start with a user message. Try again with a conversation that starts with a user message."
)


def parse_request(body: Mapping[str, Any]) -> Prompt:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValidationException(_NO_USER_MESSAGE)
    return prompt_from(body)


def prompt_from(body: Mapping[str, Any]) -> Prompt:
    """Count a Converse-shaped body (also Nova's native one): tools, system, messages."""
    builder = PromptBuilder()
    tool_config = body.get("toolConfig")
    if isinstance(tool_config, Mapping):
        for tool in _array(tool_config.get("tools") or [], "toolConfig.tools"):
            if isinstance(tool, Mapping) and "cachePoint" in tool:
                builder.cache_point(_ttl(tool["cachePoint"]))
            else:
                builder.structure(tool)
    system = body.get("system")
    if system:
        add_blocks(builder, system, "system")
    for message in _array(body.get("messages") or [], "messages"):
        if not isinstance(message, Mapping):
            raise malformed("messages: expected type: JSONObject")
        builder.message(message.get("role"))
        add_blocks(builder, message.get("content"), "content")
    inference = body.get("inferenceConfig")
    max_tokens = inference.get("maxTokens") if isinstance(inference, Mapping) else None
    return builder.build(max_tokens)


def add_blocks(builder: PromptBuilder, blocks: Any, where: str) -> None:
    for block in _array(blocks, where):
        if not isinstance(block, Mapping):
            raise malformed(f"{where}: expected type: JSONObject")
        if "text" in block:
            builder.text(block["text"])
        elif "cachePoint" in block:
            builder.cache_point(_ttl(block["cachePoint"]))
        elif any(kind in block for kind in _MEDIA):
            builder.media(block)
        else:  # toolUse, toolResult, reasoningContent, guardContent, …
            builder.structure(block)


def _array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise malformed(f"{where}: expected type: JSONArray")
    return value


def _ttl(cache_point: Any) -> Any:
    return cache_point.get("ttl") if isinstance(cache_point, Mapping) else None


def usage_fields(usage: Usage, with_cache: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if with_cache:
        fields["cacheReadInputTokenCount"] = usage.cache_read_tokens
        fields["cacheReadInputTokens"] = usage.cache_read_tokens
        fields["cacheWriteInputTokenCount"] = usage.cache_write_tokens
        fields["cacheWriteInputTokens"] = usage.cache_write_tokens
    fields["inputTokens"] = usage.input_tokens
    fields["outputTokens"] = usage.output_tokens
    fields["serverToolUsage"] = {}
    fields["totalTokens"] = usage.total_tokens
    return fields


def _echo(request: Mapping[str, Any], body: dict[str, Any]) -> None:
    """Bedrock answers with the performance config and service tier it applied."""
    for key in ("performanceConfig", "serviceTier"):
        if isinstance(request.get(key), Mapping):
            body[key] = request[key]


def response_body(completion: Completion, request: Mapping[str, Any], latency_ms: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metrics": {"latencyMs": latency_ms},
        "output": {"message": {"content": [{"text": completion.text}], "role": "assistant"}},
    }
    _echo(request, body)
    body["stopReason"] = completion.stop_reason
    body["usage"] = usage_fields(completion.usage, completion.has_cache_points)
    return body


def stream_events(completion: Completion, request: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(event type, payload) in wire order; the last one (`metadata`) gets its
    `metrics.latencyMs` when it is sent. Text blocks start with a delta: Bedrock
    sends `contentBlockStart` only for tool use (BEDROCK_WIRE.md §3.4)."""
    pad = completion.padding
    events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"p": pad(), "role": "assistant"})]
    for delta in completion.deltas:
        events.append(("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": delta}, "p": pad()}))
    events.append(("contentBlockStop", {"contentBlockIndex": 0, "p": pad()}))
    events.append(("messageStop", {"p": pad(), "stopReason": completion.stop_reason}))
    metadata: dict[str, Any] = {"metrics": {"latencyMs": 0}, "p": pad()}
    _echo(request, metadata)
    metadata["usage"] = usage_fields(completion.usage, completion.has_cache_points)
    events.append(("metadata", metadata))
    return events
