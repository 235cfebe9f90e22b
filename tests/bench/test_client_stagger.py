"""bench/client.py's `stagger`: paced streams all last as long, so connections started
together stay in step, and every stream's first byte waits behind the other
connections' requests. Staggered, connection i sends its first timed request no earlier
than `stagger × i / c` after the others may start. Only lower bounds are checked: a busy
machine can only delay a request, never send one early."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.client import Point, load
from tests.bench.answering import answering_server

#: asyncio may run a timer up to its clock's resolution early.
_EARLY = 0.002


async def _arrivals(stagger: float, concurrency: int) -> tuple[float, dict[int, list[float]]]:
    """When each connection's requests arrived (connection number → times), and a time
    before any was sent."""
    arrivals: dict[int, list[float]] = {}

    async def record(connection: int) -> None:
        arrivals.setdefault(connection, []).append(time.perf_counter())
        await asyncio.sleep(0.005)  # a few requests per connection, not max_requests at once

    server, port = await answering_server(record)
    before = time.perf_counter()
    async with server:
        point = await load(port, b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n", Point("t", "op", concurrency),
                           duration=stagger + 0.3, max_requests=1_000_000, warmup=1, stagger=stagger)
    assert point.errors == 0 and point.requests >= concurrency
    return before, arrivals


@pytest.mark.parametrize("concurrency", [2, 4])
def test_staggered_connections_start_no_earlier_than_their_share_of_the_stagger(concurrency: int) -> None:
    stagger = 0.4
    before, arrivals = asyncio.run(_arrivals(stagger, concurrency))
    assert all(len(times) >= 2 for times in arrivals.values()), {k: [t - before for t in v] for k, v in arrivals.items()}
    firsts = sorted(times[1] for times in arrivals.values())  # times[0]: the warm-up
    assert len(firsts) == concurrency
    for index, first in enumerate(firsts):
        assert first - before >= stagger * index / concurrency - _EARLY

