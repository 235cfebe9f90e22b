"""Anthropic Claude on InvokeModel: the Messages API, and legacy Text Completions.

Messages bodies carry `usage.{input_tokens, output_tokens,
cache_read_input_tokens, cache_creation_input_tokens}`; `input_tokens` excludes
the cached tokens, as Bedrock's headers do. In a stream, `message_start` gives
input and cache counts (and a placeholder `output_tokens` of 1 or 2), and
`message_delta.usage.output_tokens` is cumulative: the last one is the total.
Legacy completions (`claude-v2`, `claude-instant-v1`) carry no usage at all;
Bedrock's headers or invocation metrics are the only source (BEDROCK_WIRE.md §4).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters._fields import child, first_count, usage_or_none
from adapters.usage import Usage

__all__ = ["MODEL_PREFIXES", "usage_from_body", "usage_from_chunk", "output_text"]

MODEL_PREFIXES = ("anthropic.",)


def _usage(usage: Mapping[str, Any]) -> Usage | None:
    return usage_or_none(
        input_tokens=first_count(usage, "input_tokens"),
        output_tokens=first_count(usage, "output_tokens"),
        cache_read_tokens=first_count(usage, "cache_read_input_tokens"),
        # Already the sum of the `cache_creation.ephemeral_5m/1h` breakdown.
        cache_write_tokens=first_count(usage, "cache_creation_input_tokens"),
    )


def usage_from_body(body: Mapping[str, Any]) -> Usage | None:
    return _usage(child(body, "usage"))


def usage_from_chunk(chunk: Mapping[str, Any], usage: Usage | None) -> Usage | None:
    kind = chunk.get("type")
    if kind == "message_start":
        return _usage(child(child(chunk, "message"), "usage")) or usage
    if kind == "message_delta":
        delta = child(chunk, "usage")
        # Cumulative counts: a later value replaces the earlier one. Newer
        # deltas may repeat input/cache counts too; take whatever is present.
        update = {
            "input_tokens": first_count(delta, "input_tokens"),
            "output_tokens": first_count(delta, "output_tokens"),
            "cache_read_tokens": first_count(delta, "cache_read_input_tokens"),
            "cache_write_tokens": first_count(delta, "cache_creation_input_tokens"),
        }
        if all(value is None for value in update.values()):
            return usage
        return (usage or Usage()).merged(**update)
    return usage


def output_text(chunk: Mapping[str, Any]) -> str:
    if chunk.get("type") == "content_block_delta":
        delta = child(chunk, "delta")
        for key in ("text", "partial_json", "thinking"):
            text = delta.get(key)
            if isinstance(text, str):
                return text
        return ""
    completion = chunk.get("completion")
    return completion if isinstance(completion, str) else ""
