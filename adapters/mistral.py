"""Mistral AI on InvokeModel: text completion and chat completion.

Text models (`mistral-7b`, `mixtral-8x7b`, `mistral-large-2402`, `-small-2402`)
answer `{"outputs": [{"text", "stop_reason"}]}` with no usage at all, in the
body and in each stream chunk. Chat models (`mistral-large-2407`, Pixtral)
answer OpenAI-like `{"choices": [{"message", "stop_reason"}]}`; a `usage`
object is not guaranteed (BEDROCK_WIRE.md §4), so it is read when present and
otherwise Bedrock's headers and invocation metrics meter the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters._fields import child
from adapters.openai import choice_text, usage_from_openai
from adapters.usage import Usage

__all__ = ["MODEL_PREFIXES", "usage_from_body", "usage_from_chunk", "output_text"]

MODEL_PREFIXES = ("mistral.",)


def usage_from_body(body: Mapping[str, Any]) -> Usage | None:
    return usage_from_openai(child(body, "usage"))


def usage_from_chunk(chunk: Mapping[str, Any], usage: Usage | None) -> Usage | None:
    return usage_from_openai(child(chunk, "usage")) or usage


def output_text(chunk: Mapping[str, Any]) -> str:
    outputs = chunk.get("outputs")
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], Mapping):
        text = outputs[0].get("text")
        return text if isinstance(text, str) else ""
    return choice_text(chunk)
