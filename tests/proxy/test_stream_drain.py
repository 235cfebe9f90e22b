"""The shutdown's bound on open bidirectional streams (proxy/stream_drain.py): what is
open when it is reached is cut, once; what ended before is not; a stream opened after
it is cut at once. The end-to-end SIGTERM is tests/e2e/test_bidirectional_bounds.py."""

from __future__ import annotations

import asyncio

from proxy.stream_drain import StreamDrain


def test_the_streams_open_at_the_bound_are_cut_and_those_that_ended_are_not() -> None:
    async def main() -> None:
        drain = StreamDrain()
        cut: list[str] = []
        done = asyncio.Event()

        def open_one() -> None:
            cut.append("open")
            done.set()

        def ended() -> None:
            cut.append("ended")

        drain.opened(open_one)
        drain.opened(ended)
        drain.closed(ended)
        drain.begin(0)
        drain.begin(0)  # a second signal: the same bound
        await asyncio.wait_for(done.wait(), 30)
        await asyncio.sleep(0)
        assert cut == ["open"]
        late = asyncio.Event()
        drain.opened(late.set)  # after the bound: cut at once
        await asyncio.wait_for(late.wait(), 30)
        assert cut == ["open"]

    asyncio.run(main())


def test_nothing_is_cut_before_the_bound() -> None:
    async def main() -> None:
        drain = StreamDrain()
        cut: list[int] = []
        drain.opened(lambda: cut.append(1))
        drain.begin(3600)
        await asyncio.sleep(0)
        drain.cancel()
        assert cut == []

    asyncio.run(main())
