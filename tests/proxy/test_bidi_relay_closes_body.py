"""The bidirectional relay closes the upstream body's generator where it stops reading
it, not left to asyncio (the same class of bug as tests/proxy/test_relay_closes_body.py).

Reading stops early when the client hangs up while a frame is sent (the output loop is
cancelled inside `send`, its `chunks()` suspended at a frame) and when reading a frame
raises (the usage watcher). Left suspended, `H2Exchange.chunks()` is closed by asyncio's
async-generator finalizer hook once collected, at a moment nobody chose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.bidi import BidiUsageWatcher
from adapters.eventstream import event_message
from proxy.bidi_relay import _Stream
from proxy.event_signing import ChainSigner
from proxy.h2_upstream import H2Exchange
from tests.proxy.test_relay_closes_body import _finalized


class _Exchange:
    """The part of `H2Exchange` the relay uses: a 200 head, then `frames` as they come."""

    def __init__(self, frames: list[bytes]) -> None:
        self._frames = frames

    async def response(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        return 200, [(b"x-amzn-requestid", b"upstream-1")]

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        while self._frames:
            yield self._frames.pop(0)

    async def send(self, data: bytes) -> None:
        pass

    async def end(self) -> None:
        pass

    def close(self) -> None:
        pass


def _frames(count: int) -> list[bytes]:
    return [event_message("chunk", {"bytes": ""}) for _ in range(count)]


def _stream(exchange: _Exchange, receive: Any, send: Any) -> _Stream:
    return _Stream(receive, send, cast(H2Exchange, exchange), cast(ChainSigner, None), None, 1 << 16)


@settings(max_examples=20)  # each runs a loop and a full collection
@given(frames=st.integers(1, 5), data=st.data())
def test_a_client_gone_while_a_frame_is_sent_leaves_no_generator_to_the_finalizer(frames: int,
                                                                                  data: st.DataObject) -> None:
    """Whichever frame the client's socket stops taking: the output loop, cancelled in
    `send`, closes the body it stopped reading."""
    stuck_at = data.draw(st.integers(1, frames), label="stuck_at")
    sent: list[dict[str, Any]] = []

    async def main() -> _Stream:
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and len(sent) - 1 == stuck_at:
                gone.set()
                await asyncio.Event().wait()  # the client's socket takes no more: cancelled here

        stream = _stream(_Exchange(_frames(frames)), receive, send)
        await stream.run([])
        return stream

    stream, finalized = _finalized(main)
    assert sent[0]["status"] == 200 and len(sent) == 1 + stuck_at
    assert stream.hung_up
    assert finalized == []


class _Failing(BidiUsageWatcher):
    """A watcher that breaks on the second frame."""

    __slots__ = ("_fed",)

    def __init__(self) -> None:
        super().__init__()
        self._fed = 0

    def feed(self, data: bytes) -> bytes:
        self._fed += 1
        if self._fed == 2:
            raise RuntimeError("the watcher broke")
        return super().feed(data)


def test_a_watcher_that_raises_leaves_no_generator_to_the_finalizer() -> None:
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        async def receive() -> dict[str, Any]:
            await asyncio.Event().wait()  # the client stays: the pump is cancelled at the end
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        stream = _stream(_Exchange(_frames(3)), receive, send)
        stream._watcher = _Failing()
        with pytest.raises(RuntimeError, match="the watcher broke"):
            await stream.run([])

    _, finalized = _finalized(main)
    assert sent[0]["status"] == 200 and len(sent) == 2  # the head, the first frame
    assert finalized == []
