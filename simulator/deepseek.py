"""DeepSeek R1 (`us.deepseek.r1-v1:0`, inference profiles only) native bodies.

Request `{"prompt", "max_tokens" (≤ 32768), "temperature", "top_p", "stop"}`;
response `{"choices": [{"text", "stop_reason": "stop" | "length"}]}` with no
usage, and stream chunks of the same shape (AWS "DeepSeek models" guide).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.errors import ValidationException
from simulator.generate import DEFAULT_MAX_TOKENS, Completion, Prompt
from simulator.native import only, setting, stop_reason, text_prompt

__all__ = ["parse_request", "response_body", "stream_events"]

_KEYS = ("prompt", "max_tokens", "temperature", "top_p", "stop")
MAX_TOKENS_LIMIT = 32768


def parse_request(body: Mapping[str, Any]) -> Prompt:
    only(body, _KEYS)
    prompt = text_prompt(body, "prompt", setting(body, "max_tokens", DEFAULT_MAX_TOKENS))
    if prompt.max_tokens > MAX_TOKENS_LIMIT:
        raise ValidationException(f"max_tokens must be at most {MAX_TOKENS_LIMIT}.")
    return prompt


def response_body(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> dict[str, Any]:
    return {"choices": [{"text": completion.text, "stop_reason": stop_reason(completion, "stop", "length")}]}


def stream_events(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> list[dict[str, Any]]:
    events = [{"choices": [{"text": delta, "stop_reason": None}]} for delta in completion.deltas or ("",)]
    events[-1]["choices"][0]["stop_reason"] = stop_reason(completion, "stop", "length")
    return events
