"""Token estimates for when Bedrock reported nothing (stream cut, client gone).

About one token per four UTF-8 bytes of text: close for English with the
Claude, Nova and Llama tokenizers, and deliberately simple. Images and
documents are not text: each is counted by its family's documented formula
(`adapters.media`), never as zero and never as the size of its base64. Every
estimate is flagged `estimated=True` so reports can tell it from a billed figure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from adapters.media import media_tokens
from adapters.usage import Usage

__all__ = [
    "BYTES_PER_TOKEN",
    "estimate_tokens",
    "estimate_output_tokens",
    "estimate_usage",
    "request_text_bytes",
    "request_input_tokens",
    "response_text_chars",
]

BYTES_PER_TOKEN = 4
#: Request keys whose strings the model reads as text, across families:
#: Claude/Nova/Converse/OpenAI-style `messages` and `system`, Llama/Mistral
#: `prompt`, Titan `inputText`, Cohere `message`/`chat_history`/`texts`, tools.
_REQUEST_TEXT_ROOTS = frozenset(
    {"messages", "system", "prompt", "inputText", "message", "chat_history", "texts", "tools", "toolConfig"}
)
#: Strings that are not text the model reads or writes: binary media, enum-like
#: labels and identifiers.
_NOT_TEXT = frozenset(
    {
        "bytes", "data", "type", "role", "media_type", "format", "id", "toolUseId", "tool_use_id",
        "stopReason", "stop_reason", "completionReason", "finish_reason", "model", "p", "s3Location",
    }
)


def _ceil_tokens(size: int) -> int:
    return -(-size // BYTES_PER_TOKEN) if size > 0 else 0


def estimate_tokens(text_or_bytes: str | bytes | bytearray | memoryview) -> int:
    """≈ 1 token per 4 UTF-8 bytes; at least 1 for anything non-empty."""
    if isinstance(text_or_bytes, str):
        return _ceil_tokens(len(text_or_bytes.encode("utf-8", "surrogatepass")))
    return _ceil_tokens(len(text_or_bytes))


def estimate_output_tokens(output_text_chars: int) -> int:
    """Output tokens for this many generated characters (same 4-to-1 ratio)."""
    return _ceil_tokens(output_text_chars)


def _strings(node: Any) -> Iterator[str]:
    """Every text string under `node`, skipping `_NOT_TEXT` keys; iterative, so
    a deeply nested body cannot exhaust the stack."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, Mapping):
            stack.extend(value for key, value in item.items() if key not in _NOT_TEXT)
        elif isinstance(item, list):
            stack.extend(item)


def _measure(node: Any, model_id: str) -> tuple[int, int, bool]:
    """(UTF-8 bytes of text, tokens of images and documents, whether any medium was
    found) under `node`; iterative, like `_strings`."""
    text = media = 0
    found = False
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            text += len(item.encode("utf-8", "surrogatepass"))
        elif isinstance(item, Mapping):
            tokens = media_tokens(item, model_id)
            if tokens is not None:
                media += tokens
                found = True
            else:
                stack.extend(value for key, value in item.items() if key not in _NOT_TEXT)
        elif isinstance(item, list):
            stack.extend(item)
    return text, media, found


def _loads(body: bytes | bytearray | memoryview) -> Any:
    try:
        return json.loads(bytes(body))
    except (ValueError, RecursionError):
        return None


def request_text_bytes(request_body: bytes | bytearray | memoryview) -> int:
    """UTF-8 size of the prompt text in a request body; its raw size if none is found."""
    parsed = _loads(request_body)
    if isinstance(parsed, Mapping):
        roots = [value for key, value in parsed.items() if key in _REQUEST_TEXT_ROOTS]
        size = sum(len(text.encode("utf-8", "surrogatepass")) for text in _strings(roots))
        if size:
            return size
    return len(request_body)


def request_input_tokens(request_body: bytes | bytearray | memoryview, model_id: str = "") -> int:
    """Estimated input tokens of a request on `model_id`: its text, its images and
    documents (Llama's top-level `images` too); the raw size as text if it holds neither."""
    parsed = _loads(request_body)
    if isinstance(parsed, Mapping):
        roots = [value for key, value in parsed.items() if key in _REQUEST_TEXT_ROOTS]
        text, media, found = _measure(roots, model_id)
        images = parsed.get("images")
        if isinstance(images, list):  # Llama 3.2 vision: base64 strings
            media += sum(media_tokens({"image_url": {"url": image}}, model_id) or 0
                         for image in images if isinstance(image, str))
            found = found or bool(images)
        if text or found:
            return _ceil_tokens(text) + media
    return _ceil_tokens(len(request_body))


def response_text_chars(body: bytes | bytearray | memoryview) -> int:
    """Characters of generated text in a JSON response body; its raw size if unparsable."""
    parsed = _loads(body)
    if parsed is None:
        return len(body)
    return sum(len(text) for text in _strings(parsed))


def estimate_usage(request_body: bytes | bytearray | memoryview, output_text_chars: int, model_id: str = "") -> Usage:
    """Input from the request's text and media (on `model_id`), output from the
    characters generated so far."""
    return Usage(
        input_tokens=request_input_tokens(request_body, model_id),
        output_tokens=estimate_output_tokens(output_text_chars),
        estimated=True,
    )
