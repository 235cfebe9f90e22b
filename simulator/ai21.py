"""AI21 Labs Jamba (`ai21.jamba-1-5-mini-v1:0`, `-large-`, `jamba-instruct`) native bodies.

OpenAI-like chat completions (AWS "AI21 Labs Jamba models" guide): request
`{"messages", "max_tokens", "temperature", "top_p", "stop", "n", "tools"}`,
response `{"id", "choices": [{"index", "message", "finish_reason"}], "usage":
{"prompt_tokens", "completion_tokens", "total_tokens"}}`. Stream chunks carry
`choices[].delta`; the last one has `finish_reason` and `usage`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simulator.generate import Completion, Prompt
from simulator.native import chat_id, chat_prompt, openai_usage, stop_reason

__all__ = ["parse_request", "response_body", "stream_events"]

#: Jamba's documented default `max_tokens`.
DEFAULT_MAX_TOKENS = 4096


def parse_request(body: Mapping[str, Any]) -> Prompt:
    return chat_prompt(body, ("max_tokens",), DEFAULT_MAX_TOKENS)


def response_body(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> dict[str, Any]:
    return {
        "id": chat_id(request_id),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": completion.text, "tool_calls": None},
            "finish_reason": stop_reason(completion, "stop", "length"),
        }],
        "usage": openai_usage(completion),
    }


def stream_events(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> list[dict[str, Any]]:
    identifier = chat_id(request_id)

    def chunk(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return {"id": identifier, "choices": [{"index": 0, "delta": delta, "finish_reason": reason}], "usage": None}

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": delta}) for delta in completion.deltas]
    last = chunk({}, stop_reason(completion, "stop", "length"))
    last["usage"] = openai_usage(completion)
    events.append(last)
    return events
