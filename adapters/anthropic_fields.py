"""The Anthropic Messages fields that the body codec (`adapters.anthropic`) and the
stream codec (`adapters.anthropic_stream`) both read or write: usage counts, stop
reasons, message ids and model names. Their own module, so that neither codec
imports the other for them (the family module re-exports the stream codec).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

from adapters._fields import token_count, usage_or_none
from adapters.modelid import base_model_id
from adapters.usage import Usage

__all__ = ["STOP_TO_NEUTRAL", "message_id", "model_name", "stop_reason", "usage_fields", "usage_from_fields"]

#: Claude's `stop_reason` → the neutral one; unknown reasons end the turn.
STOP_TO_NEUTRAL = {
    "end_turn": "end_turn", "max_tokens": "max_tokens", "stop_sequence": "stop_sequence",
    "tool_use": "tool_use", "refusal": "content_filtered", "pause_turn": "end_turn",
    "model_context_window_exceeded": "model_context_window_exceeded",
}
_STOP_FROM_NEUTRAL = {"content_filtered": "refusal"}
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VERSION_SUFFIX = re.compile(r"-v\d+(:\d+)?$")


def usage_from_fields(usage: Mapping[str, Any]) -> Usage | None:
    """A Messages `usage` object; `input_tokens` excludes the cached tokens."""
    return usage_or_none(
        token_count(usage.get("input_tokens")),
        token_count(usage.get("output_tokens")),
        token_count(usage.get("cache_read_input_tokens")),
        # Already the sum of the `cache_creation.ephemeral_5m/1h` breakdown.
        token_count(usage.get("cache_creation_input_tokens")),
    )


def usage_fields(usage: Usage) -> dict[str, int]:
    """`usage` as a Messages `usage` object."""
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "output_tokens": usage.output_tokens,
    }


def stop_reason(reason: str) -> str:
    """A neutral stop reason as Claude spells it."""
    return _STOP_FROM_NEUTRAL.get(reason, reason)


def model_name(model_id: str) -> str:
    """The `model` Bedrock's Claude reports: `us.anthropic.claude-3-5-haiku-20241022-v1:0`
    → `claude-3-5-haiku-20241022` (recorded bodies, BEDROCK_WIRE.md §4.1)."""
    base = base_model_id(model_id)
    if not base.startswith("anthropic."):
        return model_id
    return _VERSION_SUFFIX.sub("", base.removeprefix("anthropic."))


def message_id() -> str:
    """A fresh id shaped like Bedrock's (`msg_bdrk_01` and 22 base-62 characters)."""
    return "msg_bdrk_01" + "".join(secrets.choice(_BASE62) for _ in range(22))
