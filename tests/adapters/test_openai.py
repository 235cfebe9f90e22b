from __future__ import annotations

from typing import Any

import pytest

from adapters import openai
from adapters.usage import Usage

BODY = {
    "id": "chatcmpl-1b2c",
    "object": "chat.completion",
    "created": 1754400000,
    "model": "openai.gpt-oss-20b-1:0",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "<reasoning>Greet.</reasoning>Hello"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16},
}


def chunk(delta: dict[str, Any], reason: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": reason}], **extra}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (BODY, Usage(14, 2)),
        ({"usage": {"prompt_tokens": "7", "completion_tokens": 1.0}}, Usage(7, 1)),
        ({"usage": {"prompt_tokens": -1}}, None),
        ({"usage": None}, None),
    ],
)
def test_usage_from_body(body: dict[str, Any], expected: Usage | None) -> None:
    assert openai.usage_from_body(body) == expected


@pytest.mark.parametrize(
    ("chunks", "expected", "text"),
    [
        ([chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
          chunk({}, "stop")], None, "Hello"),
        # `stream_options.include_usage`: a last chunk with no choices and the usage.
        ([chunk({"content": "Hi"}), chunk({}, "stop"),
          {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1}}],
         Usage(9, 1), "Hi"),
        ([chunk({"reasoning_content": "think "}), chunk({"content": "Hi"})], None, "think Hi"),
    ],
)
def test_stream(chunks: list[dict[str, Any]], expected: Usage | None, text: str) -> None:
    usage, seen = None, ""
    for item in chunks:
        usage = openai.usage_from_chunk(item, usage)
        seen += openai.output_text(item)
    assert usage == expected
    assert seen == text


@pytest.mark.parametrize(
    ("item", "text"),
    [
        (BODY, "<reasoning>Greet.</reasoning>Hello"),
        ({"choices": [{"text": "completion"}]}, "completion"),
        ({"choices": [{"delta": {"content": None}}]}, ""),
        ({"choices": ["odd"]}, ""),
        ({"choices": "odd"}, ""),
    ],
)
def test_output_text(item: dict[str, Any], text: str) -> None:
    assert openai.output_text(item) == text
