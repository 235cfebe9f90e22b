"""Mistral AI native bodies: text completion and chat completion.

Text (`mistral-7b`, `mixtral-8x7b`, `mistral-large-2402`): request `{"prompt",
"max_tokens", "stop", "temperature", "top_p", "top_k"}`, response
`{"outputs": [{"text", "stop_reason"}]}`, no usage anywhere (AWS "Mistral AI
text completion" guide). Chat (`mistral-large-2407`, Pixtral): request with
OpenAI-style `messages`, response `{"choices": [{"index", "message",
"stop_reason"}]}`; stream chunks repeat that shape with one token per
`message`. Which one a request is follows its body, as the model's schema does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simulator.generate import DEFAULT_MAX_TOKENS, Completion, Prompt
from simulator.native import chat_prompt, only, setting, stop_reason, text_prompt

__all__ = ["parse_request", "response_body", "stream_events"]

_TEXT_KEYS = ("prompt", "max_tokens", "stop", "temperature", "top_p", "top_k")
#: The documented default `max_tokens` of the text models.
TEXT_MAX_TOKENS = 512


def _is_chat(request: Mapping[str, Any]) -> bool:
    return "messages" in request


def parse_request(body: Mapping[str, Any]) -> Prompt:
    if _is_chat(body):
        return chat_prompt(body, ("max_tokens",), DEFAULT_MAX_TOKENS)
    only(body, _TEXT_KEYS)
    return text_prompt(body, "prompt", setting(body, "max_tokens", TEXT_MAX_TOKENS))


def _reason(completion: Completion) -> str:
    return stop_reason(completion, "stop", "length")


def _choice(text: str, reason: str | None) -> dict[str, Any]:
    return {"index": 0, "message": {"role": "assistant", "content": text}, "stop_reason": reason}


def response_body(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> dict[str, Any]:
    if _is_chat(request):
        return {"choices": [_choice(completion.text, _reason(completion))]}
    return {"outputs": [{"text": completion.text, "stop_reason": _reason(completion)}]}


def stream_events(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> list[dict[str, Any]]:
    chat = _is_chat(request)
    events = [
        {"choices": [_choice(delta, None)]} if chat else {"outputs": [{"text": delta, "stop_reason": None}]}
        for delta in completion.deltas or ("",)
    ]
    key = "choices" if chat else "outputs"
    events[-1][key][0]["stop_reason"] = _reason(completion)
    return events
