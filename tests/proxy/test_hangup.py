"""`read_tail`: what the proxy reads of the upstream after the client left, and when it stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from proxy.config import LimitsConfig
from proxy.hangup import read_tail
from proxy.upstream import UpstreamBroken, UpstreamResponse


class _Upstream:
    """The part of `UpstreamResponse` the tail reads: its chunks, then the end,
    a cut (`broken`) or silence (`stall`)."""

    def __init__(self, chunks: list[bytes], *, broken: bool = False, stall: bool = False) -> None:
        self._chunks = chunks
        self._broken = broken
        self._stall = stall
        self.read = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            self.read += 1
            yield chunk
        if self._broken:
            raise UpstreamBroken("ClientPayloadError")
        if self._stall:
            await asyncio.Event().wait()


def _tail(upstream: _Upstream, done_after: int | None = None, **limits: Any) -> tuple[bool, list[bytes]]:
    fed: list[bytes] = []

    def feed(chunk: bytes) -> bool:
        fed.append(chunk)
        return done_after is not None and len(fed) >= done_after

    ended = asyncio.run(read_tail(cast(UpstreamResponse, upstream), feed, LimitsConfig(**limits)))
    return ended, fed


def test_reads_to_the_end() -> None:
    assert _tail(_Upstream([b"a", b"b"])) == (True, [b"a", b"b"])


def test_stops_once_the_usage_is_known() -> None:
    upstream = _Upstream([b"a", b"usage", b"more"])
    assert _tail(upstream, done_after=2) == (False, [b"a", b"usage"])
    assert upstream.read == 2  # the rest is never read: the upstream is closed


def test_stops_at_the_byte_bound() -> None:
    upstream = _Upstream([b"x" * 10] * 100)
    ended, fed = _tail(upstream, hangup_tail_bytes=25)
    assert not ended and len(fed) == 3


def test_stops_at_the_time_bound() -> None:
    ended, fed = _tail(_Upstream([b"a"], stall=True), hangup_tail_seconds=0.01)
    assert not ended and fed == [b"a"]


def test_a_cut_upstream_ends_the_tail() -> None:
    assert _tail(_Upstream([b"a"], broken=True)) == (False, [b"a"])


@pytest.mark.parametrize("limits", [{"hangup_tail_seconds": 0}, {"hangup_tail_bytes": 0}])
def test_zero_turns_the_tail_off(limits: dict[str, Any]) -> None:
    upstream = _Upstream([b"a"])
    assert _tail(upstream, **limits) == (False, [])
    assert upstream.read == 0
