"""Amazon Nova on InvokeModel (`schemaVersion: messages-v1`).

The body's `usage` uses Converse's keys, but only the legacy cache names
(`cacheReadInputTokenCount`). A guardrail that masks the output leaves only
`{"inputTokens": 30}` in the body (openllmetry `test_nova_completion.yaml`,
2025-02); the headers still hold the full counts, which is why they win.
The stream wraps Converse-shaped events: `{"contentBlockDelta": {…}}`, …,
`{"metadata": {"usage": {…}}, "amazon-bedrock-invocationMetrics": {…}}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters._fields import child
from adapters.converse import delta_text, usage_from_token_usage
from adapters.usage import Usage

__all__ = ["MODEL_PREFIXES", "usage_from_body", "usage_from_chunk", "output_text"]

MODEL_PREFIXES = ("amazon.nova-",)


def usage_from_body(body: Mapping[str, Any]) -> Usage | None:
    return usage_from_token_usage(child(body, "usage"))


def usage_from_chunk(chunk: Mapping[str, Any], usage: Usage | None) -> Usage | None:
    metadata = child(chunk, "metadata")
    if not metadata:
        return usage
    return usage_from_token_usage(child(metadata, "usage")) or usage


def output_text(chunk: Mapping[str, Any]) -> str:
    return delta_text(child(child(chunk, "contentBlockDelta"), "delta"))
