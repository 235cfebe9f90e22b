"""An upstream body's generator is closed where reading it stops, not left to asyncio (issue #20).

Left suspended, `UpstreamResponse.chunks()` is closed by asyncio's async-generator
finalizer hook once collected: a task and a write to the loop's self-pipe each time,
and a close at a moment nobody chose. Reading stops early where a whole body in hand
ends with its last bytes (the relay), where a hung-up client's usage is known or its
bound reached (`read_tail`), where a whole-body answer is too large (`whole_body`),
and where the relay is cut while it sends (a client gone mid-stream)."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.eventstream import event_message
from metering.unit_prices import UnitPrices
from proxy.config import LimitsConfig
from proxy.errors import ServiceUnavailableException
from proxy.hangup import read_tail
from proxy.jobs import Jobs
from proxy.upstream import UpstreamResponse
from proxy.whole_body import WholeBodyOperations
from tests.proxy.test_forward_settlement import (
    BEFORE_MIDNIGHT,
    BODY,
    NOVA,
    Response,
    Upstream,
    _exchange,
    _handler,
)

T = TypeVar("T")


def _finalized(main: Callable[[], Awaitable[T]]) -> tuple[T, list[str]]:
    """Run `main` in a fresh loop; what it returned, and the async generators that
    asyncio's finalizer hook had to close."""
    finalized: list[str] = []

    async def run() -> T:
        firstiter, finalizer = sys.get_asyncgen_hooks()

        def counted(agen: AsyncGenerator[Any, None]) -> None:
            finalized.append(getattr(agen, "__qualname__", "?"))
            finalizer(agen)  # type: ignore[misc]

        sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=counted)  # the loop restores its own after run
        result = await main()
        gc.collect()
        return result

    return asyncio.run(run()), finalized


def test_a_body_relayed_whole_leaves_no_generator_to_the_finalizer() -> None:
    handler, recorder, _ = _handler(Upstream(), [BEFORE_MIDNIGHT - 3600])
    scope, receive, send, sent = _exchange()
    _, finalized = _finalized(lambda: handler(scope, receive, send))
    assert sent[0]["status"] == 200 and sent[-1] == {"type": "http.response.body", "body": sent[-1]["body"],
                                                     "more_body": False}
    assert len(recorder.events) == 1
    assert finalized == []


class _Chunks:
    """The part of `UpstreamResponse` that is read: `chunks` (each call goes on where the last stopped)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks
        self.closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while self._chunks:
            yield self._chunks.pop(0)

    def release(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(("limits", "done_after"), [({}, 1), ({"hangup_tail_bytes": 5}, None)])
def test_a_tail_that_stops_early_closes_the_body(limits: dict[str, Any], done_after: int | None) -> None:
    """Stopped once the usage is known, or at the byte bound: the rest is never read."""
    upstream = _Chunks([b"usage", b"more", b"more"])
    fed: list[bytes] = []

    def feed(chunk: bytes) -> bool:
        fed.append(chunk)
        return done_after is not None and len(fed) >= done_after

    ended, finalized = _finalized(lambda: read_tail(cast(UpstreamResponse, upstream), feed, LimitsConfig(**limits)))
    assert (ended, fed) == (False, [b"usage"])
    assert finalized == []


@settings(max_examples=30)  # each runs a loop and a full collection
@given(chunks=st.lists(st.binary(min_size=1, max_size=8), max_size=6), done_after=st.none() | st.integers(1, 6),
       tail_bytes=st.integers(1, 60))
def test_wherever_a_tail_stops_it_leaves_no_generator_to_the_finalizer(
    chunks: list[bytes], done_after: int | None, tail_bytes: int,
) -> None:
    """At its end, once the usage is known, or at the byte bound (the first chunk that
    reaches either stops it): nothing is left open."""
    upstream = _Chunks(list(chunks))
    fed: list[bytes] = []

    def feed(chunk: bytes) -> bool:
        fed.append(chunk)
        return done_after is not None and len(fed) >= done_after

    ended, finalized = _finalized(lambda: read_tail(cast(UpstreamResponse, upstream), feed,
                                                    LimitsConfig(hangup_tail_bytes=tail_bytes)))
    stop = next((i + 1 for i in range(len(chunks)) if (done_after is not None and i + 1 >= done_after)
                 or sum(map(len, chunks[:i + 1])) >= tail_bytes), None)
    assert (ended, fed) == ((False, chunks[:stop]) if stop is not None else (True, chunks))
    assert finalized == []


def test_a_whole_body_answer_too_large_closes_the_body() -> None:
    whole_body = WholeBodyOperations(
        upstream=None, jobs=Jobs(None, UnitPrices({})), admission=None,  # type: ignore[arg-type]
        recorder=None, unit_prices=UnitPrices({}), max_body_bytes=4, observe=lambda event, fallback: None,
    )
    upstream = _Chunks([b"abc", b"def", b"ghi"])

    async def main() -> None:
        with pytest.raises(ServiceUnavailableException):
            await whole_body._read(cast(UpstreamResponse, upstream))

    _, finalized = _finalized(main)
    assert upstream.closed and finalized == []


class _Stream(Response):
    """A ConverseStream answer still coming (not in hand), frame by frame."""

    body_in_hand = False

    def __init__(self) -> None:
        super().__init__()
        self.frames = [
            event_message("messageStart", {"role": "assistant"}),
            event_message("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hello"}}),
            event_message("messageStop", {"stopReason": "end_turn"}),
            event_message("metadata", {"usage": {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7},
                                       "metrics": {"latencyMs": 1}}),
        ]
        self.headers = {"content-type": "application/vnd.amazon.eventstream", "x-amzn-requestid": "upstream-1"}
        self.raw_headers = tuple((k.encode(), v.encode()) for k, v in self.headers.items())

    async def chunks(self) -> AsyncIterator[bytes]:
        while self.frames:
            yield self.frames.pop(0)


class _StreamUpstream(Upstream):
    async def send(self, *args: Any) -> Response:
        return _Stream()


def test_a_client_gone_while_a_frame_is_sent_leaves_no_generator_to_the_finalizer() -> None:
    """The hang-up cancels the relay inside `send`, its generator suspended at a frame:
    the tail reads on, and the relay closes what it stopped reading."""
    handler, recorder, _ = _handler(_StreamUpstream(), [BEFORE_MIDNIGHT - 3600])
    scope, _, _, _ = _exchange()
    scope["path"] = scope["path"].replace("converse", "converse-stream")
    scope["raw_path"] = scope["path"].encode()
    sent: list[dict[str, Any]] = []
    gone = asyncio.Event()
    messages = [{"type": "http.request", "body": BODY, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            gone.set()
            await asyncio.Event().wait()  # the client's socket takes no more: cancelled here

    _, finalized = _finalized(lambda: handler(scope, receive, send))
    assert sent[0]["status"] == 200 and len(sent) == 2
    [event] = recorder.events
    assert event.model == NOVA and event.hung_up
    assert (event.input_tokens, event.output_tokens, event.estimated) == (5, 2, False)  # the tail read the metadata
    assert finalized == []
