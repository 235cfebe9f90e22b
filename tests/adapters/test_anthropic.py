from __future__ import annotations

from typing import Any

import pytest

from adapters import anthropic
from adapters.usage import Usage
from tests.adapters.cassettes import interaction, stream_events


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("openllmetry/test_prompt_cache.yaml#1", Usage(4, 50, 0, 18131)),
        ("openllmetry/test_prompt_cache.yaml#2", Usage(4, 50, 18131, 0)),
        ("pydantic-ai/test_anthropic_cache_bedrock_real_api.yaml#1", Usage(3, 1944, 9511, 0)),
        ("pydantic-ai/test_anthropic_cache_bedrock_real_api.yaml#2", Usage(3, 44, 9511, 1956)),
    ],
)
def test_usage_from_recorded_body(name: str, expected: Usage) -> None:
    import json

    assert anthropic.usage_from_body(json.loads(interaction(name).body)) == expected


@pytest.mark.parametrize(
    ("name", "expected", "text_start"),
    [
        ("openllmetry/test_anthropic_3_completion_streaming.yaml", Usage(16, 21), "Why"),
        ("dd-trace-py/anthropic_message_invoke_stream.yaml", Usage(21, 22), ""),
    ],
)
def test_native_stream_usage_takes_the_last_cumulative_output(name: str, expected: Usage, text_start: str) -> None:
    usage = None
    text = ""
    for _, chunk in stream_events(interaction(name)):
        usage = anthropic.usage_from_chunk(chunk, usage)
        text += anthropic.output_text(chunk)
    assert usage == expected
    assert text and text.startswith(text_start)


def test_legacy_text_completion_carries_no_usage() -> None:
    (_, chunk), = stream_events(interaction("dd-trace-py/anthropic_invoke_stream.yaml"))
    assert anthropic.usage_from_chunk(chunk, None) is None
    assert anthropic.usage_from_body({"completion": " Hi", "stop_reason": "stop_sequence"}) is None
    assert anthropic.output_text({"completion": " Hello"}) == " Hello"


START = {
    "type": "message_start",
    "message": {"usage": {"input_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7, "output_tokens": 1}},
}


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([START], Usage(5, 1, 100, 7)),
        ([START, {"type": "message_delta", "usage": {"output_tokens": 9}}], Usage(5, 9, 100, 7)),
        (
            [START, {"type": "message_delta", "usage": {"output_tokens": 3}}, {"type": "message_delta", "usage": {"output_tokens": 8}}],
            Usage(5, 8, 100, 7),
        ),
        # Newer deltas repeat cumulative input/cache counts (server tools).
        ([START, {"type": "message_delta", "usage": {"input_tokens": 6, "output_tokens": 4}}], Usage(6, 4, 100, 7)),
        ([{"type": "message_delta", "usage": {"output_tokens": 4}}], Usage(0, 4)),
        ([{"type": "message_delta", "usage": {}}], None),
        ([{"type": "message_start", "message": None}], None),
        ([{"type": "ping"}, {"type": "content_block_stop", "index": 0}], None),
    ],
)
def test_usage_from_chunk(chunks: list[dict[str, Any]], expected: Usage | None) -> None:
    usage = None
    for chunk in chunks:
        usage = anthropic.usage_from_chunk(chunk, usage)
    assert usage == expected


@pytest.mark.parametrize(
    ("chunk", "text"),
    [
        ({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}, "Hi"),
        ({"type": "content_block_delta", "delta": {"type": "input_json_delta", "partial_json": '{"a":'}}, '{"a":'),
        ({"type": "content_block_delta", "delta": {"type": "thinking_delta", "thinking": "hmm"}}, "hmm"),
        ({"type": "content_block_delta", "delta": {"type": "signature_delta", "signature": "x"}}, ""),
        ({"type": "message_stop"}, ""),
        ({"type": "content_block_delta", "delta": "oops"}, ""),
    ],
)
def test_output_text(chunk: dict[str, Any], text: str) -> None:
    assert anthropic.output_text(chunk) == text
