"""bench/client.py's offered load keeps its schedule: each request goes out at its own
time, not when the loop happens to wake.

On uvloop (libuv counts in milliseconds) or asyncio's epoll selector (which rounds a
wait up to a whole millisecond), a send due in 0.3 ms waited for the next millisecond or
for the previous request's answer, whichever woke the loop first: at 1,000 req/s half the
sends went out in pairs. The offered load runs on `precise_loop`, whose waits are
`select(2)`'s, in microseconds. Only what a busy machine cannot change is checked: the
wait the kernel is asked for, the loop the load runs on, and that no send is early."""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

import bench.run
from bench.client import Point, load, on_precise_loop, precise_loop
from bench.run import Target, measure
from tests.bench.answering import answering_server

#: asyncio may run a timer up to its clock's resolution early (and perf_counter and
#: the loop's monotonic clock round differently).
_EARLY = 0.001


def test_the_precise_loop_asks_the_kernel_for_the_wait_it_needs() -> None:
    loop = precise_loop()
    try:
        selector = loop._selector  # type: ignore[attr-defined]
        assert isinstance(selector, selectors.SelectSelector)
        asked: list[float | None] = []
        kernel_select = selector._select

        def spy(readers: Any, writers: Any, errors: Any, timeout: float | None = None) -> Any:
            asked.append(timeout)
            return kernel_select(readers, writers, errors, timeout)

        selector._select = spy
        selector.select(0.0003)
        assert asked == [0.0003]  # epoll's selector asks for 0.001: the millisecond rounded up
    finally:
        loop.close()


def test_epoll_rounds_a_sub_millisecond_wait_up() -> None:
    """The reason for `precise_loop`, as CPython's selectors stand: the default selector's
    wait is whole milliseconds (if this ever fails, the default loop may do)."""
    selector = selectors.EpollSelector()
    asked: list[float] = []

    class Spy:
        def poll(self, timeout: float, max_events: int) -> list[Any]:
            asked.append(timeout)
            return []

        def close(self) -> None:
            pass

    real = selector._selector
    selector._selector = Spy()  # type: ignore[assignment]
    try:
        selector.select(0.0003)
    finally:
        selector._selector = real
        selector.close()
    assert asked == [0.001]


def test_an_offered_load_runs_on_the_precise_loop_and_no_send_is_early(monkeypatch: Any) -> None:
    """`measure(rate=…)` runs `load` on a `precise_loop`; a closed loop stays on the caller's."""
    selectors_seen: list[tuple[float, type]] = []

    async def recording_load(*args: Any, **kwargs: Any) -> Point:
        selectors_seen.append((args[5], type(getattr(asyncio.get_running_loop(), "_selector", None))))
        return await load(*args, **kwargs)

    monkeypatch.setattr(bench.run, "load", recording_load)

    async def main() -> tuple[Point, Point]:
        server, port = await answering_server()
        async with server:
            offered = await measure(Target("t", port), "converse", 4, 10.0, 40, rate=400.0)
            closed = await measure(Target("t", port), "converse", 4, 10.0, 40)
        return offered, closed

    offered, closed = asyncio.run(main())
    assert [kind for _, kind in selectors_seen] == [selectors.SelectSelector, selectors.EpollSelector]
    assert offered.requests == 40 and offered.errors == 0
    assert len(offered.late) == 40 and min(offered.late) >= -_EARLY
    assert closed.requests == 40 and closed.late == []


def test_on_precise_loop_returns_the_jobs_result_and_raises_its_error() -> None:
    async def answer() -> str:
        await asyncio.sleep(0.0001)
        return type(asyncio.get_running_loop()._selector).__name__  # type: ignore[attr-defined]

    async def fail() -> None:
        raise LookupError("inside")

    async def main() -> str:
        name = await on_precise_loop(answer())
        try:
            await on_precise_loop(fail())
        except LookupError as error:
            assert str(error) == "inside"
        else:
            raise AssertionError("the job's error was lost")
        return name

    assert asyncio.run(main()) == "SelectSelector"


def test_no_send_goes_out_before_its_scheduled_time() -> None:
    """Each send's lateness is measured from its own scheduled time: connection i of c
    starts `interval × i / c` after the others, then every `interval`. Lower bounds
    only (a busy machine can only make a send later): no send early, and the schedule
    as long as it is."""
    async def main() -> Point:
        server, port = await answering_server()
        async with server:
            return await on_precise_loop(load(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Point("t", "op", 2),
                                              10.0, 20, rate=200.0))

    point = asyncio.run(main())
    assert point.requests == 20 and len(point.late) == 20
    assert all(x >= -_EARLY for x in point.late)
    # The whole schedule spans (20 / 2 - 1) intervals of 10 ms per connection at least.
    assert point.elapsed >= 9 * 0.010 - _EARLY
