"""DeepSeek on InvokeModel (`us.deepseek.r1-v1:0`: inference profiles only).

R1 answers `{"choices": [{"text", "stop_reason"}]}` with no usage, in the body
and in each stream chunk (AWS "DeepSeek models" user guide, BEDROCK_WIRE.md
§4): Bedrock's headers and invocation metrics are the only counts. An
OpenAI-style `usage` object is read if a newer DeepSeek model sends one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters._fields import child
from adapters.openai import choice_text, usage_from_openai
from adapters.usage import Usage

__all__ = ["MODEL_PREFIXES", "usage_from_body", "usage_from_chunk", "output_text"]

MODEL_PREFIXES = ("deepseek.",)


def usage_from_body(body: Mapping[str, Any]) -> Usage | None:
    return usage_from_openai(child(body, "usage"))


def usage_from_chunk(chunk: Mapping[str, Any], usage: Usage | None) -> Usage | None:
    return usage_from_openai(child(chunk, "usage")) or usage


def output_text(chunk: Mapping[str, Any]) -> str:
    return choice_text(chunk)
