from __future__ import annotations

import json

import pytest

from adapters import nova
from adapters.usage import Usage
from tests.adapters.cassettes import interaction, stream_events


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("openllmetry/test_nova_cross_region_invoke.yaml", Usage(7, 53, 0, 0)),
        # Guardrail-masked output: the body keeps only inputTokens (headers have 51 out).
        ("openllmetry/test_nova_completion.yaml", Usage(30, 0)),
    ],
)
def test_usage_from_recorded_body(name: str, expected: Usage) -> None:
    assert nova.usage_from_body(json.loads(interaction(name).body)) == expected


def test_native_stream() -> None:
    usage = None
    text = ""
    for _, chunk in stream_events(interaction("openllmetry/test_nova_invoke_stream.yaml")):
        usage = nova.usage_from_chunk(chunk, usage)
        text += nova.output_text(chunk)
    assert usage == Usage(30, 55, 0, 0)
    assert text.startswith("On their first night")


@pytest.mark.parametrize(
    ("chunk", "text"),
    [
        ({"contentBlockDelta": {"delta": {"text": "Hi"}, "contentBlockIndex": 0}}, "Hi"),
        ({"contentBlockDelta": {"delta": {"toolUse": {"input": '{"city"'}}}}, '{"city"'),
        ({"contentBlockDelta": {"delta": {"reasoningContent": {"text": "so"}}}}, "so"),
        ({"messageStart": {"role": "assistant"}}, ""),
        ({"metadata": {"usage": {"inputTokens": 1}}}, ""),
    ],
)
def test_output_text(chunk: dict[str, object], text: str) -> None:
    assert nova.output_text(chunk) == text


def test_metadata_without_usage_keeps_what_was_seen() -> None:
    seen = Usage(1, 2)
    assert nova.usage_from_chunk({"metadata": {"metrics": {}}}, seen) is seen
    assert nova.usage_from_chunk({"contentBlockStop": {}}, seen) is seen
