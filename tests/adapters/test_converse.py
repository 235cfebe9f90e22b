from __future__ import annotations

import json
from typing import Any

import pytest

from adapters import converse
from adapters.usage import Usage
from tests.adapters.cassettes import interaction, stream_events
from tests.adapters.test_watch import BODIES, STREAMS


@pytest.mark.parametrize(
    "name", [name for name in BODIES if interaction(name).operation == "Converse"]
)
def test_usage_from_recorded_response(name: str) -> None:
    assert converse.usage_from_response(json.loads(interaction(name).body)) == BODIES[name]


@pytest.mark.parametrize(
    "name", [name for name in STREAMS if interaction(name).operation == "ConverseStream"]
)
def test_usage_from_recorded_stream(name: str) -> None:
    found = [
        usage
        for event_type, payload in stream_events(interaction(name))
        if (usage := converse.usage_from_event(event_type, payload)) is not None
    ]
    assert found == [STREAMS[name]]


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # Both spellings, equal (every 2025 recording): counted once.
        (
            {"inputTokens": 2, "outputTokens": 5, "cacheReadInputTokens": 1322, "cacheReadInputTokenCount": 1322,
             "cacheWriteInputTokens": 0, "cacheWriteInputTokenCount": 0, "totalTokens": 1329},
            Usage(2, 5, 1322, 0),
        ),
        ({"inputTokens": 1, "outputTokens": 1, "cacheWriteInputTokenCount": 9}, Usage(1, 1, 0, 9)),
        ({"inputTokens": 1, "cacheReadInputTokens": 4, "cacheReadInputTokenCount": 3}, Usage(1, 0, 4, 0)),
        ({"inputTokens": 13.0, "outputTokens": "69", "serverToolUsage": {}}, Usage(13, 69)),
        ({"totalTokens": 10}, None),
        ({}, None),
    ],
)
def test_usage_from_token_usage(usage: dict[str, Any], expected: Usage | None) -> None:
    assert converse.usage_from_token_usage(usage) == expected
    assert converse.usage_from_response({"usage": usage}) == expected
    assert converse.usage_from_event("metadata", {"usage": usage, "metrics": {"latencyMs": 1}}) == expected


@pytest.mark.parametrize("body", [{}, {"usage": None}, {"usage": [1]}, {"usage": "x"}])
def test_response_without_usage(body: dict[str, Any]) -> None:
    assert converse.usage_from_response(body) is None


def test_only_metadata_carries_usage() -> None:
    assert converse.usage_from_event("messageStop", {"usage": {"inputTokens": 1}}) is None


@pytest.mark.parametrize(
    ("event_type", "payload", "text"),
    [
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "The"}, "p": "abc"}, "The"),
        ("contentBlockDelta", {"delta": {"toolUse": {"input": '{"loc'}}}, '{"loc'),
        ("contentBlockDelta", {"delta": {"reasoningContent": {"text": "think"}}}, "think"),
        ("contentBlockDelta", {"delta": {"reasoningContent": {"signature": "sig"}}}, ""),
        ("contentBlockDelta", {"delta": None}, ""),
        ("messageStart", {"role": "assistant"}, ""),
        ("contentBlockStart", {"start": {"toolUse": {"name": "get_weather"}}}, ""),
    ],
)
def test_output_text(event_type: str, payload: dict[str, Any], text: str) -> None:
    assert converse.output_text(event_type, payload) == text
