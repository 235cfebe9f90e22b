"""Any model without its own adapter.

Usage comes only from what Bedrock adds for every model: the
`X-Amzn-Bedrock-*-Token-Count` headers of InvokeModel and the
`amazon-bedrock-invocationMetrics` of a stream's last chunk (`adapters.headers`).
The text readers below only feed the estimate when a stream is cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.usage import Usage

__all__ = ["MODEL_PREFIXES", "usage_from_body", "usage_from_chunk", "output_text"]

MODEL_PREFIXES: tuple[str, ...] = ()

#: Where the common native stream chunks put generated text (BEDROCK_WIRE.md §4):
#: Titan `outputText`, Llama `generation`, Cohere Command `text`, legacy Claude
#: `completion`.
_TEXT_KEYS = ("outputText", "generation", "text", "completion")


def usage_from_body(body: Mapping[str, Any]) -> Usage | None:
    return None


def usage_from_chunk(chunk: Mapping[str, Any], usage: Usage | None) -> Usage | None:
    return usage


def output_text(chunk: Mapping[str, Any]) -> str:
    for key in _TEXT_KEYS:
        text = chunk.get(key)
        if isinstance(text, str):
            return text
    # Mistral `outputs[].text`, OpenAI-shaped `choices[].delta.content` / `.text`.
    for key in ("outputs", "choices"):
        items = chunk.get(key)
        if isinstance(items, list) and items and isinstance(items[0], Mapping):
            first = items[0]
            delta = first.get("delta")
            if isinstance(delta, Mapping) and isinstance(delta.get("content"), str):
                return str(delta["content"])
            if isinstance(first.get("text"), str):
                return str(first["text"])
    return ""
