from __future__ import annotations

from typing import Any

import pytest

from adapters import ai21
from adapters.usage import Usage

JAMBA_BODY = {
    "id": "chatcmpl-9f8e",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!", "tool_calls": None},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
}
#: Legacy Jurassic-2: token arrays only, so the headers meter it.
J2_BODY = {"id": 1234, "prompt": {"text": "Hi", "tokens": [{}]},
           "completions": [{"data": {"text": " there", "tokens": [{}]}, "finishReason": {"reason": "endoftext"}}]}


@pytest.mark.parametrize(("body", "expected"), [(JAMBA_BODY, Usage(10, 3)), (J2_BODY, None), ({}, None)])
def test_usage_from_body(body: dict[str, Any], expected: Usage | None) -> None:
    assert ai21.usage_from_body(body) == expected


def test_stream_usage_is_in_the_last_chunk() -> None:
    def chunk(delta: dict[str, Any], reason: str | None = None, usage: Any = None) -> dict[str, Any]:
        return {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": delta, "finish_reason": reason}], "usage": usage}

    chunks = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hi"}), chunk({"content": "!"}),
              chunk({}, "stop", {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12})]
    usage, text = None, ""
    for item in chunks:
        usage = ai21.usage_from_chunk(item, usage)
        text += ai21.output_text(item)
    assert (usage, text) == (Usage(10, 2), "Hi!")


@pytest.mark.parametrize(
    ("chunk", "text"),
    [(JAMBA_BODY, "Hi!"), (J2_BODY, " there"), ({"completions": ["odd"]}, ""), ({"choices": []}, "")],
)
def test_output_text(chunk: dict[str, Any], text: str) -> None:
    assert ai21.output_text(chunk) == text
