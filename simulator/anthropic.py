"""Anthropic Claude Messages API bodies, as Bedrock's InvokeModel carries them.

Bedrock-specific rules (BEDROCK_WIRE.md §4): `anthropic_version` and
`max_tokens` are required, `model` and `stream` are not allowed (the model is
in the path, streaming is the operation). Responses copy the recordings:
`msg_bdrk_…` ids, the model name without `anthropic.` and version suffix,
usage with cache fields and the 2025 `cache_creation` TTL breakdown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from simulator.generate import Completion, Prompt, PromptBuilder, malformed

__all__ = ["parse_request", "response_body", "stream_events", "model_name", "message_id"]

_REQUIRED = ("anthropic_version", "max_tokens", "messages")
_FORBIDDEN = ("model", "stream")
_MEDIA = ("image", "document")
_VERSION_SUFFIX = re.compile(r"-v\d+(?::\d+)?$")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def parse_request(body: Mapping[str, Any]) -> Prompt:
    for key in _REQUIRED:
        if key not in body:
            raise malformed(f"required key [{key}] not found")
    for key in _FORBIDDEN:
        if key in body:
            raise malformed(f"extraneous key [{key}] is not permitted")
    builder = PromptBuilder()
    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            _add_block(builder, tool, structure=True)
    system = body.get("system")
    if isinstance(system, str):
        if system:
            builder.text(system)
    elif system is not None:
        _add_blocks(builder, system)
    messages = body["messages"]
    if not isinstance(messages, list):
        raise malformed("messages: expected type: JSONArray")
    for message in messages:
        if not isinstance(message, Mapping):
            raise malformed("messages: expected type: JSONObject")
        builder.message(message.get("role"))
        content = message.get("content")
        if isinstance(content, str):
            builder.text(content)
        else:
            _add_blocks(builder, content)
    return builder.build(body["max_tokens"])


def _add_blocks(builder: PromptBuilder, blocks: Any) -> None:
    if not isinstance(blocks, list):
        raise malformed("content: expected type: JSONArray")
    for block in blocks:
        _add_block(builder, block, structure=False)


def _add_block(builder: PromptBuilder, block: Any, *, structure: bool) -> None:
    if not isinstance(block, Mapping):
        raise malformed("expected type: JSONObject")
    kind = block.get("type")
    if kind == "text" and not structure:
        builder.text(block.get("text"))
    elif kind in _MEDIA:
        builder.media(block)
    else:
        builder.structure({k: v for k, v in block.items() if k != "cache_control"})
    marker = block.get("cache_control")
    if marker:
        builder.cache_point(marker.get("ttl") if isinstance(marker, Mapping) else None)


@lru_cache(maxsize=256)
def model_name(base_model: str) -> str:
    """`anthropic.claude-3-5-haiku-20241022-v1:0` → `claude-3-5-haiku-20241022`."""
    return _VERSION_SUFFIX.sub("", base_model.removeprefix("anthropic."))


def message_id(request_id: str) -> str:
    """A unique `msg_bdrk_01…` id (22 base-62 characters, like the recordings)."""
    number = int(request_id.replace("-", ""), 16)
    chars = []
    for _ in range(22):
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    return "msg_bdrk_01" + "".join(chars)


def _usage(completion: Completion, output_tokens: int) -> dict[str, Any]:
    usage = completion.usage
    write = usage.cache_write_tokens
    long_lived = completion.cache_ttl == "1h"
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": 0 if long_lived else write,
            "ephemeral_1h_input_tokens": write if long_lived else 0,
        },
        "output_tokens": output_tokens,
    }


def response_body(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> dict[str, Any]:
    return {
        "id": message_id(request_id),
        "type": "message",
        "role": "assistant",
        "model": model_name(model),
        "content": [{"type": "text", "text": completion.text}],
        "stop_reason": completion.stop_reason,
        "stop_sequence": None,
        "usage": _usage(completion, completion.usage.output_tokens),
    }


def stream_events(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> list[dict[str, Any]]:
    """message_start … message_stop; the caller merges invocationMetrics into the last."""
    start: dict[str, Any] = {
        "id": message_id(request_id),
        "type": "message",
        "role": "assistant",
        "model": model_name(model),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        # The recordings show 1–2 output tokens already counted at message_start.
        "usage": _usage(completion, 1),
    }
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    for delta in completion.deltas:
        events.append({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": delta}})
    events.append({"type": "content_block_stop", "index": 0})
    events.append({
        "type": "message_delta",
        "delta": {"stop_reason": completion.stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": completion.usage.output_tokens},
    })
    events.append({"type": "message_stop"})
    return events
