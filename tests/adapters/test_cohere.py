from __future__ import annotations

import json
from typing import Any

import pytest

from adapters import cohere
from adapters.usage import Usage
from tests.adapters.cassettes import interaction, stream_events

COMMAND_R_BODY = {
    "response_id": "0c1d…",
    "text": "Hello there.",
    "generation_id": "5e2a…",
    "chat_history": [{"role": "USER", "message": "Hi"}, {"role": "CHATBOT", "message": "Hello there."}],
    "finish_reason": "COMPLETE",
    "meta": {
        "api_version": {"version": "1"},
        "billed_units": {"input_tokens": 9, "output_tokens": 2},
        "tokens": {"input_tokens": 75, "output_tokens": 2},
    },
}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # Command text and Embed bodies have no usage: the headers meter them.
        ("openllmetry/test_cohere_completion.yaml", None),
        ("pydantic-ai/TestBedrock.test_cohere_v4_with_dimensions.yaml", None),
    ],
)
def test_usage_from_recorded_body(name: str, expected: Usage | None) -> None:
    assert cohere.usage_from_body(json.loads(interaction(name).body)) == expected


def test_recorded_command_stream() -> None:
    usage, text = None, ""
    for _, chunk in stream_events(interaction("dd-trace-py/cohere_invoke_stream_single_output.yaml")):
        usage = cohere.usage_from_chunk(chunk, usage)
        text += cohere.output_text(chunk)
    assert usage is None  # invocation metrics only
    assert text.startswith(" I am very happy to assist you!")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (COMMAND_R_BODY, Usage(9, 2)),  # billed units win over `tokens`
        ({"meta": {"tokens": {"input_tokens": 75, "output_tokens": 2}}}, Usage(75, 2)),
        ({"meta": {"billed_units": {"input_tokens": 4.0}}}, Usage(4)),
        ({"embeddings": [[0.1]], "id": "x", "response_type": "embeddings_floats", "texts": ["hi"]}, None),
        ({"generations": [{"id": "g", "text": "Hi", "finish_reason": "COMPLETE"}], "prompt": "Hi"}, None),
        ({"meta": "odd"}, None),
    ],
)
def test_usage_from_body(body: dict[str, Any], expected: Usage | None) -> None:
    assert cohere.usage_from_body(body) == expected


def test_command_r_stream() -> None:
    chunks = [
        {"is_finished": False, "event_type": "stream-start", "generation_id": "5e2a…"},
        {"is_finished": False, "event_type": "text-generation", "text": "Hello"},
        {"is_finished": False, "event_type": "text-generation", "text": " there."},
        {"is_finished": True, "event_type": "stream-end", "response": COMMAND_R_BODY, "finish_reason": "COMPLETE"},
    ]
    usage, text = None, ""
    for chunk in chunks:
        usage = cohere.usage_from_chunk(chunk, usage)
        text += cohere.output_text(chunk)
    assert usage == Usage(9, 2)
    assert text == "Hello there."


@pytest.mark.parametrize(
    ("chunk", "text"),
    [
        ({"is_finished": False, "text": " I"}, " I"),
        ({"generations": [{"text": "whole"}]}, "whole"),
        ({"finish_reason": "MAX_TOKENS", "is_finished": True}, ""),
        ({"generations": []}, ""),
    ],
)
def test_output_text(chunk: dict[str, Any], text: str) -> None:
    assert cohere.output_text(chunk) == text
