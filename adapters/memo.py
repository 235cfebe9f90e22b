"""Bounded memos on the hot path: a plain dict read first, this helper only on a miss.

Several answers are the same for every request that asks them again — a header name's
lower-case form and fate (proxy/headers.py), an event-stream header block
(adapters/frame_scan.py), a model id's price (metering/pricing.py), a caller's chain
(proxy/admission.py), a model path's route (proxy/routing.py) — but their keys are partly chosen by clients, so the table
that remembers them must stay bounded. Each site reads its own dict directly (a hit
is one dict look-up, no call: `functools.lru_cache` costs about 0.17 µs a call, a
request asks some of these twenty times, issue #20) and calls `remember` with the
answer it computed on a miss.

A full table is emptied, not trimmed: an LRU order costs a move on every hit, and
keeping only the first entries (ignoring later ones) would let a burst of odd keys
early in a process's life shut the common ones out for good. After a clear, the few
keys real traffic uses come back at the cost of one miss each. Here rather than in
`proxy/` or `metering/`: adapters import neither, and both import adapters.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["remember"]

K = TypeVar("K")
V = TypeVar("V")


def remember(table: dict[K, V], key: K, value: V, kept: int) -> V:
    """`value`, stored in `table` under `key`; a table already holding `kept` entries
    is emptied first, so it never holds more than `kept`."""
    if len(table) >= kept:
        table.clear()
    table[key] = value
    return value
