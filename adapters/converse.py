"""Converse and ConverseStream: one body shape for every model family.

Usage is `usage` in the Converse response and in the last ConverseStream event,
`metadata` (BEDROCK_WIRE.md §3.4). Since 2025 Bedrock sends the cache counts
twice, as `cacheReadInputTokens` (modelled) and `cacheReadInputTokenCount`
(legacy), with equal values (dd-trace-py `bedrock_converse_prompt_caching.yaml`,
pydantic-ai `test_bedrock_cache_write_and_read.yaml`): take one, never add both.
Both also say which service tier and latency mode served the request
(`serviceTier`, `performanceConfig`): the price depends on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters._fields import child, first_count, usage_or_none
from adapters.tiers import said_by_converse
from adapters.usage import Usage

__all__ = ["usage_from_token_usage", "usage_from_response", "usage_from_event", "output_text", "delta_text"]


def usage_from_token_usage(usage: Mapping[str, Any]) -> Usage | None:
    """A Bedrock `TokenUsage` object; Nova's InvokeModel bodies use the same keys."""
    return usage_or_none(
        input_tokens=first_count(usage, "inputTokens"),
        output_tokens=first_count(usage, "outputTokens"),
        cache_read_tokens=first_count(usage, "cacheReadInputTokens", "cacheReadInputTokenCount"),
        cache_write_tokens=first_count(usage, "cacheWriteInputTokens", "cacheWriteInputTokenCount"),
    )


def usage_from_response(body: Mapping[str, Any]) -> Usage | None:
    """A non-streamed Converse response body, with the tier it says served it."""
    return _with_tier(usage_from_token_usage(child(body, "usage")), body)


def usage_from_event(event_type: str, payload: Mapping[str, Any]) -> Usage | None:
    """One ConverseStream event; only `metadata` carries usage (and the serving tier)."""
    if event_type != "metadata":
        return None
    return _with_tier(usage_from_token_usage(child(payload, "usage")), payload)


def _with_tier(usage: Usage | None, document: Mapping[str, Any]) -> Usage | None:
    if usage is None:
        return None
    service_tier, latency = said_by_converse(document)
    if service_tier is None and latency is None:  # most bodies say neither
        return usage
    return usage.merged(service_tier=service_tier, latency=latency)


def output_text(event_type: str, payload: Mapping[str, Any]) -> str:
    """Generated text in a `contentBlockDelta`: text, tool input JSON, reasoning."""
    if event_type != "contentBlockDelta":
        return ""
    return delta_text(child(payload, "delta"))


def delta_text(delta: Mapping[str, Any]) -> str:
    """The text of a Converse `ContentBlockDelta` union (shared with Nova's native stream)."""
    text = delta.get("text")
    if isinstance(text, str):
        return text
    tool_input = child(delta, "toolUse").get("input")
    if isinstance(tool_input, str):
        return tool_input
    reasoning = child(delta, "reasoningContent").get("text")
    if isinstance(reasoning, str):
        return reasoning
    return ""
