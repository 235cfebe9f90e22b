from __future__ import annotations

from typing import Any

import pytest

from adapters import family_of, mistral
from adapters.usage import Usage
from adapters.watch import BodyUsageWatcher
from tests.adapters.cassettes import interaction

PIXTRAL = "pydantic-ai/test_bedrock_media_kind_delivered_in_tool_result[mistral_document].yaml"


@pytest.mark.parametrize(("number", "expected"), [(1, Usage(64, 17)), (2, Usage(150, 34))])
def test_recorded_pixtral_converse(number: int, expected: Usage) -> None:
    item = interaction(f"{PIXTRAL}#{number}")
    assert family_of(item.model_id) == "mistral"
    watcher = BodyUsageWatcher(item.operation, item.model_id, item.request_body)
    watcher.feed(item.body)
    assert watcher.finish(item.status, item.headers) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # Text models: no usage at all; chat models: none guaranteed (BEDROCK_WIRE.md §4).
        ({"outputs": [{"text": "Paris.", "stop_reason": "stop"}]}, None),
        ({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "stop_reason": "stop"}]},
         None),
        ({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}, Usage(12, 3)),
        ({"usage": None}, None),
    ],
)
def test_usage_from_body(body: dict[str, Any], expected: Usage | None) -> None:
    assert mistral.usage_from_body(body) == expected


def test_header_only_invoke_model() -> None:
    watcher = BodyUsageWatcher("InvokeModel", "mistral.mistral-7b-instruct-v0:2", b'{"prompt": "<s>[INST] Hi [/INST]"}')
    watcher.feed(b'{"outputs":[{"text":"Hello!","stop_reason":"stop"}]}')
    headers = {"X-Amzn-Bedrock-Input-Token-Count": "11", "X-Amzn-Bedrock-Output-Token-Count": "2"}
    assert watcher.finish(200, headers) == Usage(11, 2)


@pytest.mark.parametrize(
    ("chunk", "text"),
    [
        ({"outputs": [{"text": "Mist", "stop_reason": None}]}, "Mist"),
        ({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ral"}, "stop_reason": None}]}, "ral"),
        ({"choices": [{"index": 0, "delta": {"content": "!"}}]}, "!"),
        ({"outputs": [{"stop_reason": "length"}]}, ""),
        ({"outputs": []}, ""),
    ],
)
def test_output_text(chunk: dict[str, Any], text: str) -> None:
    assert mistral.output_text(chunk) == text


def test_stream_chunks_keep_what_was_seen() -> None:
    seen = Usage(3, 4)
    assert mistral.usage_from_chunk({"outputs": [{"text": "x", "stop_reason": None}]}, seen) is seen
    assert mistral.usage_from_chunk({"usage": {"prompt_tokens": 5, "completion_tokens": 6}}, seen) == Usage(5, 6)
