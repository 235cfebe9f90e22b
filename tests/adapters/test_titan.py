from __future__ import annotations

import json
from typing import Any

import pytest

from adapters import titan
from adapters.usage import Usage
from adapters.watch import StreamUsageWatcher
from tests.adapters.cassettes import interaction, stream_events

BLOCKED_STREAM = "openllmetry/test_guardrail_invoke_stream.yaml"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("openllmetry/test_titan_completion.yaml", Usage(30, 29)),
        ("openllmetry/test_guardrail_invoke.yaml", Usage(28, 197)),  # float counts
        ("dd-trace-py/amazon_invoke_model_arn.yaml", Usage(18, 50)),
        ("dd-trace-py/amazon_embedding.yaml", Usage(3)),
        ("pydantic-ai/TestBedrock.test_titan_v2_with_dimensions.yaml", Usage(4)),
    ],
)
def test_usage_from_recorded_body(name: str, expected: Usage) -> None:
    assert titan.usage_from_body(json.loads(interaction(name).body)) == expected


@pytest.mark.parametrize(
    ("name", "expected", "start"),
    [
        ("openllmetry/test_titan_invoke_stream.yaml", Usage(28, 188), "\nOnce upon a time"),
        ("dd-trace-py/amazon_invoke_stream.yaml", Usage(18, 51), "\nDatadog is"),
        (BLOCKED_STREAM, Usage(6, 3), "Input blocked"),
    ],
)
def test_recorded_native_stream(name: str, expected: Usage, start: str) -> None:
    usage, text = None, ""
    for _, chunk in stream_events(interaction(name)):
        usage = titan.usage_from_chunk(chunk, usage)
        text += titan.output_text(chunk)
    assert usage == expected
    assert isinstance(usage.input_tokens, int) and isinstance(usage.output_tokens, int)
    assert text.startswith(start)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # What the simulator answers (and Bedrock: BEDROCK_WIRE.md §4.1).
        ({"inputTextTokenCount": 12, "results": [{"tokenCount": 30, "outputText": "…", "completionReason": "LENGTH"}]},
         Usage(12, 30)),
        ({"inputTextTokenCount": 6.0, "results": [{"tokenCount": 3.0, "outputText": "Input blocked"}]}, Usage(6, 3)),
        ({"embedding": [0.1, 0.2], "embeddingsByType": {"float": [0.1, 0.2]}, "inputTextTokenCount": 4}, Usage(4)),
        ({"results": [{"tokenCount": 2}, {"tokenCount": 5}, "odd"]}, Usage(0, 7)),
        ({"inputTextTokenCount": "x", "results": "nope"}, None),
        ({"results": []}, None),
    ],
)
def test_usage_from_body(body: dict[str, Any], expected: Usage | None) -> None:
    assert titan.usage_from_body(body) == expected


def test_running_output_counts_keep_the_last() -> None:
    """The AWS chunk schema allows `totalOutputTextTokenCount` in every chunk: a running total."""
    usage = None
    for chunk in ({"outputText": "a", "inputTextTokenCount": 28.0, "totalOutputTextTokenCount": 4},
                  {"outputText": "b", "totalOutputTextTokenCount": None, "completionReason": None},
                  {"outputText": "c", "totalOutputTextTokenCount": 31.0, "completionReason": "FINISH"}):
        usage = titan.usage_from_chunk(chunk, usage)
    assert usage == Usage(28, 31)


def test_blocked_stream_is_exact_without_invocation_metrics() -> None:
    item = interaction(BLOCKED_STREAM)
    watcher = StreamUsageWatcher(item.operation, item.model_id, item.request_body)
    assert watcher.feed(item.body) == item.body
    assert not watcher.complete and watcher.error is None  # no invocation metrics, ever
    watcher.end()
    usage = watcher.finish()
    assert usage == Usage(6, 3) and not usage.estimated


def test_stream_cut_before_the_last_chunk_is_estimated() -> None:
    item = interaction("openllmetry/test_titan_invoke_stream.yaml")
    size = int.from_bytes(item.body[:4], "big")  # the first of three frames
    watcher = StreamUsageWatcher(item.operation, item.model_id, item.request_body)
    watcher.feed(item.body[:size])
    usage = watcher.finish()
    assert not watcher.complete and usage.estimated
    assert usage.input_tokens == 28  # Titan's own count from the first chunk
    assert usage.output_tokens > 0
