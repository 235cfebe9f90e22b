"""Amazon Titan Text (`amazon.titan-text-*`, `amazon.titan-tg1-*`) native bodies.

Request `{"inputText", "textGenerationConfig": {"maxTokenCount", "temperature",
"topP", "stopSequences"}}`; response `{"inputTextTokenCount", "results":
[{"tokenCount", "outputText", "completionReason"}]}`. Stream chunks carry
many tokens each: the first has `inputTextTokenCount`, the last
`totalOutputTextTokenCount` and `completionReason` (openllmetry
`test_titan_completion.yaml`, `test_titan_invoke_stream.yaml`, 2025-02).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simulator.generate import Completion, Prompt, malformed
from simulator.native import grouped, only, setting, stop_reason, text_prompt

__all__ = ["parse_request", "response_body", "stream_events"]

_KEYS = ("inputText", "textGenerationConfig")
_CONFIG_KEYS = ("maxTokenCount", "temperature", "topP", "stopSequences")
#: Titan Text's documented default `maxTokenCount`.
DEFAULT_MAX_TOKENS = 512
#: Words per stream chunk: the recordings show a few hundred characters per chunk.
WORDS_PER_CHUNK = 40


def parse_request(body: Mapping[str, Any]) -> Prompt:
    only(body, _KEYS)
    config = body.get("textGenerationConfig") or {}
    if not isinstance(config, Mapping):
        raise malformed("textGenerationConfig: expected type: JSONObject")
    only(config, _CONFIG_KEYS)
    return text_prompt(body, "inputText", setting(config, "maxTokenCount", DEFAULT_MAX_TOKENS))


def _reason(completion: Completion) -> str:
    return stop_reason(completion, "FINISH", "LENGTH")


def response_body(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> dict[str, Any]:
    usage = completion.usage
    return {
        "inputTextTokenCount": usage.input_tokens,
        "results": [{
            "tokenCount": usage.output_tokens,
            "outputText": completion.text,
            "completionReason": _reason(completion),
        }],
    }


def stream_events(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> list[dict[str, Any]]:
    usage = completion.usage
    events: list[dict[str, Any]] = [
        {"outputText": text, "index": 0} for text in grouped(completion.deltas, WORDS_PER_CHUNK)
    ] or [{"outputText": "", "index": 0}]
    events[0]["inputTextTokenCount"] = usage.input_tokens
    events[-1]["totalOutputTextTokenCount"] = usage.output_tokens
    events[-1]["completionReason"] = _reason(completion)
    return events
