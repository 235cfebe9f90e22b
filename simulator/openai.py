"""OpenAI gpt-oss (`openai.gpt-oss-20b-1:0`, `-120b-1:0`) native bodies.

An OpenAI Chat Completions request (`messages`, `max_completion_tokens` or
`max_tokens`, …); `stream` may be omitted but must match the operation. The
response is a `chat.completion` object with `usage`; on InvokeModel the
reasoning comes first, in `<reasoning>` tags (AWS "OpenAI models" guide).
Stream chunks are `chat.completion.chunk` objects; as with OpenAI, a final
chunk with `usage` (and no choices) only when `stream_options.include_usage`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from simulator.generate import DEFAULT_MAX_TOKENS, Completion, Prompt, malformed
from simulator.native import chat_id, chat_prompt, openai_usage, stop_reason

__all__ = ["parse_request", "response_body", "stream_events"]


def parse_request(body: Mapping[str, Any]) -> Prompt:
    return chat_prompt(body, ("max_completion_tokens", "max_tokens"), DEFAULT_MAX_TOKENS)


def _check_stream(request: Mapping[str, Any], streaming: bool) -> None:
    stream = request.get("stream")
    if stream is not None and stream is not streaming:
        raise malformed(f"stream must be {str(streaming).lower()} for this operation")


def _with_reasoning(deltas: tuple[str, ...]) -> str:
    """The first third of the words as reasoning, the answer right after the closing tag."""
    if len(deltas) < 2:
        return "".join(deltas)
    cut = max(1, len(deltas) // 3)
    return f"<reasoning>{''.join(deltas[:cut]).strip()}</reasoning>{''.join(deltas[cut:]).lstrip()}"


def _head(request_id: str, model: str, kind: str) -> dict[str, Any]:
    return {"id": chat_id(request_id), "object": kind, "created": int(time.time()), "model": model}


def response_body(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> dict[str, Any]:
    _check_stream(request, streaming=False)
    return {
        **_head(request_id, model, "chat.completion"),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": _with_reasoning(completion.deltas)},
            "finish_reason": stop_reason(completion, "stop", "length"),
        }],
        "usage": openai_usage(completion),
    }


def stream_events(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> list[dict[str, Any]]:
    _check_stream(request, streaming=True)
    head = _head(request_id, model, "chat.completion.chunk")

    def chunk(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": delta}) for delta in completion.deltas]
    events.append(chunk({}, stop_reason(completion, "stop", "length")))
    options = request.get("stream_options")
    if isinstance(options, Mapping) and options.get("include_usage"):
        events.append({**head, "choices": [], "usage": openai_usage(completion)})
    return events
