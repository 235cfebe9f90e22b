"""AI21 Labs on InvokeModel: Jamba (`ai21.jamba-1-5-mini-v1:0`, `-large-`, `jamba-instruct`).

Jamba speaks OpenAI chat completions: `usage.{prompt_tokens, completion_tokens,
total_tokens}` in the body and in the last stream chunk, text in
`choices[].message.content` / `choices[].delta.content` (BEDROCK_WIRE.md §4,
from the AWS docs, not recorded). Legacy Jurassic-2 (`ai21.j2-*`) bodies only
hold token arrays, so Bedrock's headers meter them; its text is
`completions[].data.text`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters._fields import child
from adapters.openai import choice_text, usage_from_openai
from adapters.usage import Usage

__all__ = ["MODEL_PREFIXES", "usage_from_body", "usage_from_chunk", "output_text"]

MODEL_PREFIXES = ("ai21.",)


def usage_from_body(body: Mapping[str, Any]) -> Usage | None:
    return usage_from_openai(child(body, "usage"))


def usage_from_chunk(chunk: Mapping[str, Any], usage: Usage | None) -> Usage | None:
    return usage_from_openai(child(chunk, "usage")) or usage


def output_text(chunk: Mapping[str, Any]) -> str:
    completions = chunk.get("completions")
    if isinstance(completions, list) and completions and isinstance(completions[0], Mapping):
        text = child(completions[0], "data").get("text")
        return text if isinstance(text, str) else ""
    return choice_text(chunk)
