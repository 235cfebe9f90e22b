"""Amazon Titan Text (`amazon.titan-text-*`, `amazon.titan-tg1-*`) and Titan Embeddings.

Bodies carry `inputTextTokenCount` and `results[].tokenCount`; an embeddings
body only `inputTextTokenCount` (embeddings bill input only). In a stream the
first chunk has `inputTextTokenCount` and the last `totalOutputTextTokenCount`
and `completionReason`. With a guardrail attached every count is a JSON float
(`28.0`, openllmetry `test_guardrail_invoke.yaml`, 2025-02).

The AWS chunk schema lists `totalOutputTextTokenCount` in every chunk, so it
is read as a running total (the last value wins), never as a sign that the
stream is over: the stream watcher waits for Bedrock's invocation metrics. A
guardrail that blocks the input ends the stream after one chunk that has both
counts but no `amazon-bedrock-invocationMetrics` (openllmetry
`test_guardrail_invoke_stream.yaml`: 6.0 / 3.0, 2025-02); the watcher meters
those once the stream has ended whole (`adapters.watch`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters._fields import first_count, token_count, usage_or_none
from adapters.usage import Usage

__all__ = ["MODEL_PREFIXES", "usage_from_body", "usage_from_chunk", "output_text"]

MODEL_PREFIXES = ("amazon.titan-text-", "amazon.titan-tg1-", "amazon.titan-embed-")


def usage_from_body(body: Mapping[str, Any]) -> Usage | None:
    output = None
    results = body.get("results")
    if isinstance(results, list):
        counts = [token_count(r.get("tokenCount")) for r in results if isinstance(r, Mapping)]
        present = [count for count in counts if count is not None]
        output = sum(present) if present else None
    return usage_or_none(input_tokens=first_count(body, "inputTextTokenCount"), output_tokens=output)


def usage_from_chunk(chunk: Mapping[str, Any], usage: Usage | None) -> Usage | None:
    input_tokens = first_count(chunk, "inputTextTokenCount")
    output_tokens = first_count(chunk, "totalOutputTextTokenCount")
    if input_tokens is None and output_tokens is None:
        return usage
    return (usage or Usage()).merged(input_tokens=input_tokens, output_tokens=output_tokens)


def output_text(chunk: Mapping[str, Any]) -> str:
    text = chunk.get("outputText")
    return text if isinstance(text, str) else ""
