from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx
import pytest

from adapters.headers import usage_from_headers, usage_from_invocation_metrics
from adapters.usage import Usage
from tests.adapters.cassettes import interaction, stream_events


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {"X-Amzn-Bedrock-Input-Token-Count": "4", "X-Amzn-Bedrock-Output-Token-Count": "50",
             "X-Amzn-Bedrock-Cache-Read-Input-Token-Count": "0", "X-Amzn-Bedrock-Cache-Write-Input-Token-Count": "18131",
             "X-Amzn-Bedrock-Invocation-Latency": "7275"},
            Usage(4, 50, 0, 18131),
        ),
        ({"x-amzn-bedrock-input-token-count": "3", "x-amzn-bedrock-output-token-count": "1944",
          "x-amzn-bedrock-cache-read-input-token-count": "9511"}, Usage(3, 1944, 9511)),
        ({"x-amzn-bedrock-input-token-count": "3"}, Usage(3)),  # embeddings
        ({"X-AMZN-BEDROCK-INPUT-TOKEN-COUNT": " 28.0 "}, Usage(28)),
        ({"x-amzn-bedrock-output-token-count": "12"}, Usage(0, 12)),
        ({"x-amzn-bedrock-input-token-count": "lots"}, None),
        ({"x-amzn-bedrock-input-token-count": "-1"}, None),
        ({"content-type": "application/json", "x-amzn-RequestId": "x"}, None),
        ({}, None),
    ],
)
@pytest.mark.parametrize("kind", [dict, httpx.Headers])
def test_usage_from_headers(headers: dict[str, str], expected: Usage | None, kind: Callable[[dict[str, str]], Mapping[str, str]]) -> None:
    assert usage_from_headers(kind(headers)) == expected


@pytest.mark.parametrize(
    "name",
    [
        "openllmetry/test_cohere_completion.yaml",
        "openllmetry/test_nova_completion.yaml",
        "pydantic-ai/TestBedrock.test_cohere_v4_with_dimensions.yaml",
    ],
)
def test_recorded_headers(name: str) -> None:
    from tests.adapters.test_watch import BODIES

    assert usage_from_headers(interaction(name).headers) == BODIES[name]


@pytest.mark.parametrize(
    ("chunk", "expected"),
    [
        ({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 16, "outputTokenCount": 21,
                                                                       "invocationLatency": 738, "firstByteLatency": 378}},
         Usage(16, 21)),
        ({"amazon-bedrock-invocationMetrics": {"inputTokenCount": 30, "outputTokenCount": 55,
                                               "cacheReadInputTokenCount": 2, "cacheWriteInputTokenCount": 3}},
         Usage(30, 55, 2, 3)),
        ({"amazon-bedrock-invocationMetrics": {"inputTokenCount": 28.0, "outputTokenCount": 188.0}}, Usage(28, 188)),
        ({"amazon-bedrock-invocationMetrics": {"invocationLatency": 5}}, None),
        ({"amazon-bedrock-invocationMetrics": None}, None),
        ({"inputTextTokenCount": 6.0, "totalOutputTextTokenCount": 3.0}, None),
    ],
)
def test_usage_from_invocation_metrics(chunk: dict[str, Any], expected: Usage | None) -> None:
    assert usage_from_invocation_metrics(chunk) == expected


@pytest.mark.parametrize(
    "name",
    [
        "openllmetry/test_anthropic_3_completion_streaming.yaml",
        "openllmetry/test_titan_invoke_stream.yaml",
        "dd-trace-py/meta_invoke_stream.yaml",
        "dd-trace-py/cohere_invoke_stream_single_output.yaml",
    ],
)
def test_only_the_last_recorded_chunk_has_metrics(name: str) -> None:
    from tests.adapters.test_watch import STREAMS

    found = [usage_from_invocation_metrics(chunk) for _, chunk in stream_events(interaction(name))]
    assert found[-1] == STREAMS[name]
    assert all(usage is None for usage in found[:-1])
