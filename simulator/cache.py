"""Prompt caching with Bedrock's accounting.

A request's cache breakpoints (Claude `cache_control`, Converse/Nova
`cachePoint`) each name a prefix of the prompt. The longest prefix already in
the cache is a *read*; the tokens from there up to the last breakpoint are a
*write*; `input_tokens` is what is left (BEDROCK_WIRE.md §3.4 and the two
recorded cache cassettes: write 1028 then read 1028). Every breakpoint's prefix
is (re)stored, and a hit refreshes its TTL, as Anthropic documents.

No minimum cacheable length is enforced (real models ignore breakpoints under
1024–4096 tokens): tests should not need kilobytes of filler to see a cache hit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from simulator.generate import CachePoint

__all__ = ["PromptCache"]

_TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


class PromptCache:
    """In-memory, per model; bounded so a long benchmark cannot grow it forever."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._expiry: dict[tuple[str, bytes], float] = {}
        self._max_entries = max_entries

    def resolve(self, model: str, points: Sequence[CachePoint]) -> tuple[int, int]:
        """(cache-read tokens, cache-write tokens) for a prompt, updating the cache."""
        if not points:
            return 0, 0
        now = time.monotonic()
        read = 0
        for point in reversed(points):
            expiry = self._expiry.get((model, point.digest))
            if expiry is not None and expiry > now:
                read = point.tokens
                break
        for point in points:
            key = (model, point.digest)
            self._expiry.pop(key, None)  # re-insert: dict order is then LRU order
            self._expiry[key] = now + _TTL_SECONDS.get(point.ttl, 300.0)
        while len(self._expiry) > self._max_entries:
            del self._expiry[next(iter(self._expiry))]
        return read, points[-1].tokens - read

    def clear(self) -> None:
        self._expiry.clear()
