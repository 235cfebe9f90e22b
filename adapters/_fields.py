"""Defensive readers for JSON that came off the wire.

Bedrock bodies are untrusted input for the meter: a field may be missing, null,
a string, or a float (Titan with a guardrail reports `28.0`, recorded
2025-02 in openllmetry `test_guardrail_invoke.yaml`). These helpers never raise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from adapters.usage import Usage

__all__ = ["token_count", "child", "first_count", "usage_or_none"]

_EMPTY: Mapping[str, Any] = {}


def token_count(value: object) -> int | None:
    """A non-negative token count from an int, an integral float or a numeric string."""
    if type(value) is int:  # the usual case, in one check (a bool's type is bool)
        return value if value >= 0 else None
    if value is None:  # the next usual: a count not sent (four checks below, per missing key)
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            try:
                return int(text)
            except ValueError:  # isdigit() takes "²", int() does not; nor over 4300 digits
                pass
        try:
            value = float(text)
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return round(value)
    return None


def child(parent: object, key: str) -> Mapping[str, Any]:
    """`parent[key]` if both are mappings, else an empty mapping."""
    # `dict` first: the ABC check is several times slower, and this runs per chunk.
    if isinstance(parent, dict) or isinstance(parent, Mapping):
        value = parent.get(key)
        if isinstance(value, dict) or isinstance(value, Mapping):
            return value
    return _EMPTY


def first_count(source: Mapping[str, Any], *keys: str) -> int | None:
    """The count under the first key present; for fields Bedrock spells two ways."""
    for key in keys:
        count = token_count(source.get(key))
        if count is not None:
            return count
    return None


def usage_or_none(
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cache_read_tokens: int | None = None,
    cache_write_tokens: int | None = None,
) -> Usage | None:
    """A `Usage` from the counts that were present; `None` if none was."""
    if input_tokens is None and output_tokens is None and cache_read_tokens is None and cache_write_tokens is None:
        return None
    return Usage(input_tokens or 0, output_tokens or 0, cache_read_tokens or 0, cache_write_tokens or 0)
