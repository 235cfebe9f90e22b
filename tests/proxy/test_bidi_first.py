"""`proxy.bidi_relay.first_or_none`: the response head, or None if the input pump stopped
first. Whichever loses the race is cancelled *and awaited*, and so is everything when the
stream's own task is cancelled while it waits: no task outlives the call (a leftover
one would keep an upstream read or an event waiter running after the stream is gone)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from proxy.bidi_relay import first_or_none


def _others() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def _never() -> int:
    await asyncio.Event().wait()
    return 0


def test_the_head_first_returns_it_and_leaves_no_task() -> None:
    async def scenario() -> None:
        async def head() -> int:
            return 7

        assert await first_or_none(head(), asyncio.Event()) == 7
        assert _others() == set()

    asyncio.run(scenario())


def test_a_stop_first_returns_none_and_the_read_is_cancelled_before_it_returns() -> None:
    async def scenario() -> None:
        stopped = asyncio.Event()
        cancelled = asyncio.Event()

        async def head() -> int:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return 0

        asyncio.get_running_loop().call_soon(stopped.set)
        assert await first_or_none(head(), stopped) is None
        assert cancelled.is_set()
        assert _others() == set()

    asyncio.run(scenario())


@pytest.mark.parametrize("steps", [0, 1, 3])
def test_the_stream_cancelled_while_it_waits_leaves_no_task(steps: int) -> None:
    async def scenario() -> None:
        waiter = asyncio.ensure_future(first_or_none(_never(), asyncio.Event()))
        for _ in range(steps + 1):
            await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert _others() == set()

    asyncio.run(scenario())


def test_a_read_that_fails_while_cancelled_is_not_reported_to_the_loop() -> None:
    async def scenario() -> None:
        reported: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: reported.append(context))
        stopped = asyncio.Event()

        async def head() -> int:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise ConnectionResetError("reset while cancelled") from None
            return 0

        asyncio.get_running_loop().call_soon(stopped.set)
        assert await first_or_none(head(), stopped) is None
        gc.collect()
        await asyncio.sleep(0)
        assert reported == []

    asyncio.run(scenario())
