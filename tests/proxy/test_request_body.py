"""Reading a request body: within its limit, within the in-flight budget, without stalling.

Driven with an ASGI `receive` of scripted messages, so a stall is a `receive` that
never returns and the timeout is what ends it (short, and asserted by its effect,
never by how long it took).
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import RequestTimeoutException, ServiceUnavailableException, ValidationException
from proxy.inflight import BodyBudget
from proxy.request import json_body, read_body
from proxy.routing import Operation, Route
from proxy.stall_watch import StallWatch

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def script(*chunks: bytes, stall: bool = False) -> tuple[Callable[[], Awaitable[dict[str, Any]]], list[int]]:
    """A `receive` giving `chunks` (the last one final unless `stall`), then waiting for ever;
    and the list of how many messages it has given."""
    given_count = [0]

    async def receive() -> dict[str, Any]:
        index = given_count[0]
        if index >= len(chunks):
            await asyncio.Event().wait()  # a client that went silent
        given_count[0] += 1
        return {"type": "http.request", "body": chunks[index],
                "more_body": stall or index < len(chunks) - 1}

    return receive, given_count


def length(n: int) -> list[tuple[bytes, bytes]]:
    return [(b"content-length", str(n).encode())]


async def test_a_declared_body_beyond_the_budget_is_refused_before_it_is_read() -> None:
    budget = BodyBudget(100)
    held = budget.reservation()
    held.hold(60)
    receive, given_count = script(b"x" * 50)
    reservation = budget.reservation()
    with pytest.raises(ServiceUnavailableException):
        await read_body(receive, length(50), 1000, reservation=reservation)
    assert given_count[0] == 0 and budget.held == 60
    held.release()
    assert await read_body(receive, length(50), 1000, reservation=reservation) == b"x" * 50
    assert budget.held == 50
    reservation.release()
    assert budget.held == 0


async def test_a_chunked_body_is_counted_as_it_arrives() -> None:
    budget = BodyBudget(100)
    receive, given_count = script(b"a" * 40, b"b" * 40, b"c" * 40)
    reservation = budget.reservation()
    with pytest.raises(ServiceUnavailableException):
        await read_body(receive, [], 1000, reservation=reservation)
    assert given_count[0] == 3 and budget.held == 80
    reservation.release()
    assert budget.held == 0


async def test_a_stalled_body_times_out_as_a_bedrock_error() -> None:
    receive, given_count = script(b"x" * 10, stall=True)
    with pytest.raises(RequestTimeoutException) as raised:
        await read_body(receive, length(100), 1000, chunk_timeout=0.05)
    assert raised.value.status == 408 and raised.value.reason == "body_timeout"
    assert given_count[0] == 1


async def test_a_body_arriving_in_time_is_read_whole() -> None:
    receive, _ = script(b"a", b"b", b"c")
    assert await read_body(receive, length(3), 10, chunk_timeout=5) == b"abc"


async def test_the_size_limit_holds_without_a_declared_length() -> None:
    receive, _ = script(b"x" * 6, b"x" * 6)
    with pytest.raises(ValidationException, match="exceeds the limit of 10 bytes"):
        await read_body(receive, [], 10)


@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 60)), max_size=60))
def test_the_budget_never_exceeds_its_limit_and_releases_exactly(steps: list[tuple[int, int]]) -> None:
    """Any interleaving of holds and releases by ten requests: the budget holds the sum
    of what the live reservations hold, never more than its limit, and 0 at the end."""
    budget = BodyBudget(150)
    reservations = [budget.reservation() for _ in range(10)]
    for index, size in steps:
        reservation = reservations[index]
        if size == 0:
            reservation.release()
            continue
        before = reservation.size
        try:
            reservation.hold(size)
        except ServiceUnavailableException:
            assert reservation.size == before and budget.held - before + size > budget.limit
        assert budget.held == sum(r.size for r in reservations) <= budget.limit
    for reservation in reservations:
        reservation.release()
    assert budget.held == 0


async def test_the_stall_watch_moves_on_while_chunks_arrive() -> None:
    """The bodies being read share one timer: when it comes due after a recent chunk it
    is armed again from that chunk, and only a real stall cancels the read (checked
    without a clock race: the sweep is called, the last chunk's time set)."""
    watch = StallWatch(100.0)
    stalls = watch._stalls
    stalls.sweep()  # not due: armed again for last chunk + timeout
    assert not watch.fired and watch in stalls.watches and stalls._handle is not None
    watch.stop()
    assert watch not in stalls.watches


async def test_only_the_stalled_bodies_are_cancelled() -> None:
    """Of the bodies read at once, a sweep cancels each that went `timeout` without a
    chunk, and none other; the timer is then armed for the first of the rest."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Event()
    watches: dict[str, StallWatch] = {}

    async def reading(name: str, seconds: float) -> None:
        watches[name] = StallWatch(seconds)
        try:
            await gate.wait()
        finally:
            watches[name].stop()

    tasks = {name: asyncio.create_task(reading(name, seconds))
             for name, seconds in (("stalled", 10.0), ("fed", 10.0), ("longer", 1000.0))}
    await asyncio.sleep(0)
    watches["stalled"].last = loop.time() - 11
    watches["fed"].last = loop.time() - 11
    watches["fed"].fed()
    watches["longer"].last = loop.time() - 11
    stalls = watches["fed"]._stalls
    stalls.sweep()
    assert [name for name, watch in watches.items() if watch.fired] == ["stalled"]
    assert stalls._due == watches["fed"].last + 10.0
    gate.set()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    assert tasks["stalled"].cancelled() and not tasks["fed"].cancelled() and not tasks["longer"].cancelled()
    assert not stalls.watches


@pytest.mark.parametrize("operation", [Operation.INVOKE_MODEL, Operation.CONVERSE])
@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress])
def test_a_compressed_body_is_never_decompressed(operation: Operation, compress: Callable[[bytes], bytes]) -> None:
    """A compressed body (`Content-Encoding: gzip` or not) is read as the bytes it is: not
    JSON, so refused. Inflating it could turn 10 KB into gigabytes (a decompression bomb)."""
    document = b'{"messages": [{"role": "user", "content": [{"text": "hi"}]}]}'
    assert json_body(Route(operation, "amazon.nova-micro-v1:0"), document) is not None
    with pytest.raises(ValidationException, match="Malformed input request"):
        json_body(Route(operation, "amazon.nova-micro-v1:0"), compress(document))
