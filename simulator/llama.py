"""Meta Llama (`meta.llama3-*`, `meta.llama4-*`, …) native bodies.

Request `{"prompt", "max_gen_len", "temperature", "top_p"}` (+ `images` for
the vision models); response `{"generation", "prompt_token_count",
"generation_token_count", "stop_reason"}` (openllmetry
`test_meta_llama3_completion.yaml`). Stream chunks carry one token each:
`generation_token_count` is cumulative, `prompt_token_count` is set in the
first chunk only (null after), `stop_reason` in the last (dd-trace-py
`meta_invoke_stream.yaml`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simulator.generate import Completion, Prompt, PromptBuilder
from simulator.native import only, require, setting, stop_reason

__all__ = ["parse_request", "response_body", "stream_events"]

_KEYS = ("prompt", "max_gen_len", "temperature", "top_p", "images")
#: Llama's documented default `max_gen_len`.
DEFAULT_MAX_TOKENS = 512


def parse_request(body: Mapping[str, Any]) -> Prompt:
    only(body, _KEYS)
    require(body, "prompt")
    builder = PromptBuilder()
    images = body.get("images")
    if isinstance(images, list):
        for image in images:
            builder.media({"image": image})
    builder.text(body["prompt"])
    return builder.build(setting(body, "max_gen_len", DEFAULT_MAX_TOKENS))


def _reason(completion: Completion) -> str:
    return stop_reason(completion, "stop", "length")


def response_body(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> dict[str, Any]:
    return {
        "generation": completion.text,
        "prompt_token_count": completion.usage.input_tokens,
        "generation_token_count": completion.usage.output_tokens,
        "stop_reason": _reason(completion),
    }


def stream_events(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"generation": delta, "prompt_token_count": None, "generation_token_count": count, "stop_reason": None}
        for count, delta in enumerate(completion.deltas, start=1)
    ] or [{"generation": "", "prompt_token_count": None, "generation_token_count": 0, "stop_reason": None}]
    events[0]["prompt_token_count"] = completion.usage.input_tokens
    events[-1]["stop_reason"] = _reason(completion)
    return events
