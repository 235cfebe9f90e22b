"""OpenAI gpt-oss on InvokeModel (`openai.gpt-oss-20b-1:0`, `openai.gpt-oss-120b-1:0`).

The body is an OpenAI chat completion object: `usage.{prompt_tokens,
completion_tokens, total_tokens}`, the text in `choices[].message.content`
(reasoning first, in `<reasoning>` tags, on InvokeModel). Stream chunks are
`chat.completion.chunk` objects with `choices[].delta.content`; a `usage`
object comes only in a final chunk, when the request asked for it
(`stream_options.include_usage`), else the invocation metrics are the only
count. Shapes: AWS "OpenAI models" user guide, BEDROCK_WIRE.md §4 (not
recorded). AI21 Jamba and Mistral chat reuse the readers below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters._fields import child, first_count, usage_or_none
from adapters.usage import Usage

__all__ = [
    "MODEL_PREFIXES",
    "usage_from_body",
    "usage_from_chunk",
    "output_text",
    "usage_from_openai",
    "choice_text",
]

MODEL_PREFIXES = ("openai.",)
#: Where an OpenAI-shaped choice holds generated text: streamed deltas, whole
#: messages (Mistral chat streams whole `message`s), completions (`text`).
#: `reasoning_content` is billed output too.
_TEXT_KEYS = ("content", "reasoning_content")


def usage_from_openai(usage: Mapping[str, Any]) -> Usage | None:
    """An OpenAI `usage` object; `None` when it is absent or `null`."""
    return usage_or_none(
        input_tokens=first_count(usage, "prompt_tokens"),
        output_tokens=first_count(usage, "completion_tokens"),
    )


def choice_text(chunk: Mapping[str, Any]) -> str:
    """The text of the first choice: `delta`, `message` (content or reasoning) or `text`."""
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return ""
    choice = choices[0]
    for holder in (child(choice, "delta"), child(choice, "message")):
        for key in _TEXT_KEYS:
            text = holder.get(key)
            if isinstance(text, str) and text:
                return text
    text = choice.get("text")
    return text if isinstance(text, str) else ""


def usage_from_body(body: Mapping[str, Any]) -> Usage | None:
    return usage_from_openai(child(body, "usage"))


def usage_from_chunk(chunk: Mapping[str, Any], usage: Usage | None) -> Usage | None:
    return usage_from_openai(child(chunk, "usage")) or usage


def output_text(chunk: Mapping[str, Any]) -> str:
    return choice_text(chunk)
