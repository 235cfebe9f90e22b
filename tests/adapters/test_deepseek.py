from __future__ import annotations

from typing import Any

import pytest

from adapters import deepseek
from adapters.eventstream import event_message
from adapters.usage import Usage
from adapters.watch import BodyUsageWatcher, StreamUsageWatcher


def test_body_has_no_usage_so_headers_meter_it() -> None:
    body = b'{"choices":[{"text":"<think>Hm.</think>Hi","stop_reason":"stop"}]}'
    watcher = BodyUsageWatcher("InvokeModel", "us.deepseek.r1-v1:0", b'{"prompt": "Hi", "max_tokens": 10}')
    watcher.feed(body)
    assert deepseek.usage_from_body({"choices": [{"text": "Hi", "stop_reason": "stop"}]}) is None
    headers = {"x-amzn-bedrock-input-token-count": "5", "x-amzn-bedrock-output-token-count": "9"}
    assert watcher.finish(200, headers) == Usage(5, 9)


def test_stream_is_metered_by_invocation_metrics() -> None:
    import base64
    import json

    def frame(chunk: dict[str, Any]) -> bytes:
        return event_message("chunk", {"bytes": base64.b64encode(json.dumps(chunk).encode()).decode()})

    chunks = [{"choices": [{"text": "Hi", "stop_reason": None}]},
              {"choices": [{"text": "!", "stop_reason": "stop"}],
               "amazon-bedrock-invocationMetrics": {"inputTokenCount": 5, "outputTokenCount": 2,
                                                    "invocationLatency": 9, "firstByteLatency": 4}}]
    watcher = StreamUsageWatcher("InvokeModelWithResponseStream", "us.deepseek.r1-v1:0", b"{}")
    data = b"".join(frame(chunk) for chunk in chunks)
    assert watcher.feed(data) == data
    assert watcher.finish() == Usage(5, 2)
    assert [deepseek.output_text(chunk) for chunk in chunks] == ["Hi", "!"]


@pytest.mark.parametrize(
    ("chunk", "text"),
    [({"choices": [{"text": "Deep", "stop_reason": None}]}, "Deep"), ({"choices": []}, ""), ({}, "")],
)
def test_output_text(chunk: dict[str, Any], text: str) -> None:
    assert deepseek.output_text(chunk) == text
