"""Cohere on InvokeModel: Command (text), Command R / R+ (chat) and Embed.

* Command (`cohere.command-text-v14`, `-light-text-v14`): `generations[]` and no
  usage (openllmetry `test_cohere_completion.yaml`: headers only); stream chunks
  `{"text", "is_finished"}`, the last `{"finish_reason", "is_finished": true}`
  with the invocation metrics (dd-trace-py `cohere_invoke_stream_single_output.yaml`).
* Command R / R+: `meta.billed_units.{input_tokens, output_tokens}` (what is
  billed; `meta.tokens` also counts Cohere's own prompt template, so it is only
  a fallback). The stream's `stream-end` chunk carries the whole response,
  `meta` included, under `response`.
* Embed v3 / v4: no usage in the body; the input-token header is the only source
  (pydantic-ai `TestBedrock.test_cohere_v4_with_dimensions.yaml`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters._fields import child, first_count, usage_or_none
from adapters.usage import Usage

__all__ = ["MODEL_PREFIXES", "usage_from_body", "usage_from_chunk", "output_text"]

MODEL_PREFIXES = ("cohere.",)


def _counts(units: Mapping[str, Any]) -> Usage | None:
    return usage_or_none(
        input_tokens=first_count(units, "input_tokens"),
        output_tokens=first_count(units, "output_tokens"),
    )


def _meta_usage(meta: Mapping[str, Any]) -> Usage | None:
    return _counts(child(meta, "billed_units")) or _counts(child(meta, "tokens"))


def usage_from_body(body: Mapping[str, Any]) -> Usage | None:
    return _meta_usage(child(body, "meta"))


def usage_from_chunk(chunk: Mapping[str, Any], usage: Usage | None) -> Usage | None:
    response = child(chunk, "response")
    if not response:
        return usage
    return _meta_usage(child(response, "meta")) or usage


def output_text(chunk: Mapping[str, Any]) -> str:
    text = chunk.get("text")
    if isinstance(text, str):
        return text
    generations = chunk.get("generations")
    if isinstance(generations, list) and generations and isinstance(generations[0], Mapping):
        text = generations[0].get("text")
        return text if isinstance(text, str) else ""
    return ""
