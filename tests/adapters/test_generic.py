from __future__ import annotations

from typing import Any

import pytest

from adapters import generic
from tests.adapters.cassettes import interaction, stream_events


@pytest.mark.parametrize(
    ("chunk", "text"),
    [
        ({"outputText": "Titan", "index": 0}, "Titan"),
        ({"generation": "Llama", "prompt_token_count": None}, "Llama"),
        ({"is_finished": False, "text": " Cohere"}, " Cohere"),
        ({"outputs": [{"text": "Mistral", "stop_reason": None}]}, "Mistral"),
        ({"choices": [{"delta": {"content": "gpt-oss"}}]}, "gpt-oss"),
        ({"choices": [{"text": "DeepSeek", "stop_reason": None}]}, "DeepSeek"),
        ({"choices": []}, ""),
        ({"is_finished": True, "finish_reason": "MAX_TOKENS"}, ""),
    ],
)
def test_output_text(chunk: dict[str, Any], text: str) -> None:
    assert generic.output_text(chunk) == text


def test_nothing_from_the_body() -> None:
    assert generic.usage_from_body({"prompt_token_count": 8, "generation_token_count": 35}) is None
    assert generic.usage_from_chunk({"inputTextTokenCount": 6.0}, None) is None


@pytest.mark.parametrize(
    ("name", "start"),
    [
        ("dd-trace-py/meta_invoke_stream.yaml", "\n\nThe phrase \"lorem ipsum\""),
        ("dd-trace-py/cohere_invoke_stream_single_output.yaml", " I am very happy to assist you!"),
        ("openllmetry/test_titan_invoke_stream.yaml", "\n"),
    ],
)
def test_recorded_stream_text(name: str, start: str) -> None:
    text = "".join(generic.output_text(chunk) for _, chunk in stream_events(interaction(name)))
    assert text.startswith(start) and len(text) > 20
