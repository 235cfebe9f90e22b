from __future__ import annotations

import json

import pytest

from adapters.estimate import (
    estimate_tokens,
    estimate_usage,
    request_text_bytes,
    response_text_chars,
)
from adapters.usage import Usage


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        ("", 0),
        (b"", 0),
        ("a", 1),
        ("abcd", 1),
        ("abcde", 2),
        (b"x" * 400, 100),
        ("é" * 4, 2),  # 8 UTF-8 bytes
        ("🙂", 1),
        (bytearray(b"12345678"), 2),
        (memoryview(b"123456789"), 3),
    ],
)
def test_estimate_tokens(value: str | bytes, tokens: int) -> None:
    assert estimate_tokens(value) == tokens


def _j(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("request_body", "text_bytes"),
    [
        # Claude Messages: system string + content string + text blocks; image data skipped.
        (
            _j({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "system": "abcd",
                "messages": [{"role": "user", "content": "efgh"},
                             {"role": "user", "content": [{"type": "text", "text": "ijkl"},
                                                          {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUJD" * 100}}]}]}),
            12,
        ),
        # Nova / Converse: text blocks, image bytes skipped.
        (
            _j({"schemaVersion": "messages-v1", "system": [{"text": "abc"}],
                "messages": [{"role": "user", "content": [{"text": "defg"}, {"image": {"format": "png", "source": {"bytes": "QUJD" * 50}}}]}],
                "inferenceConfig": {"maxTokens": 10}}),
            7,
        ),
        (_j({"prompt": "<s>[INST] hi [/INST]", "max_gen_len": 512}), 20),
        (_j({"inputText": "Hello, world!", "textGenerationConfig": {"maxTokenCount": 10}}), 13),
        (_j({"texts": ["Hello", "world"], "input_type": "search_query"}), 10),
        (_j({"max_tokens": 10}), 18),  # no text: the raw size
        (b"\x00\x01 not json", 11),
        (b"", 0),
    ],
)
def test_request_text_bytes(request_body: bytes, text_bytes: int) -> None:
    assert request_text_bytes(request_body) == text_bytes


def test_response_text_chars() -> None:
    body = _j({"id": "msg_bdrk_123", "type": "message", "role": "assistant",
               "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn", "usage": {}})
    assert response_text_chars(body) == 6
    assert response_text_chars(b"{truncated") == 10


@pytest.mark.parametrize(
    ("request_body", "output_chars", "expected"),
    [
        (_j({"messages": [{"role": "user", "content": "x" * 40}]}), 0, Usage(10, 0, estimated=True)),
        (_j({"messages": [{"role": "user", "content": "x" * 41}]}), 9, Usage(11, 3, estimated=True)),
        (b"", 1, Usage(0, 1, estimated=True)),
        (b"", -5, Usage(0, 0, estimated=True)),
    ],
)
def test_estimate_usage(request_body: bytes, output_chars: int, expected: Usage) -> None:
    assert estimate_usage(request_body, output_chars) == expected


def test_deeply_nested_request_does_not_recurse() -> None:
    deep = b'{"messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    assert request_text_bytes(deep) == len(deep)  # json gives up: raw size
