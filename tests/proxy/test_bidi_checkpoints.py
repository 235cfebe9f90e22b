"""When an open bidirectional stream's usage is written down (proxy/bidi_relay.py
`_Checkpoints`): the first change at once, later ones at most every interval, the
last one never lost to the throttle — unless the stream ended (its final event)."""

from __future__ import annotations

import asyncio

from proxy.bidi_relay import _Checkpoints


def test_the_first_change_is_written_at_once_later_ones_when_due() -> None:
    async def main() -> None:
        writes: list[int] = []
        checkpoints = _Checkpoints(lambda: writes.append(1), 3600)
        checkpoints.seen()
        assert writes == [1]
        checkpoints.seen()
        checkpoints.seen()
        assert writes == [1]  # due in an hour, one timer for both changes
        checkpoints.close()  # the stream ended: its final event supersedes it
        await asyncio.sleep(0)
        assert writes == [1]

    asyncio.run(main())


def test_a_zero_interval_writes_every_change() -> None:
    async def main() -> None:
        writes: list[int] = []
        checkpoints = _Checkpoints(lambda: writes.append(1), 0)
        for _ in range(3):
            checkpoints.seen()
        assert writes == [1, 1, 1]

    asyncio.run(main())


def test_a_throttled_change_is_written_when_its_timer_fires() -> None:
    async def main() -> None:
        fired = asyncio.Event()
        checkpoints = _Checkpoints(fired.set, 0.01)
        checkpoints.seen()
        fired.clear()
        checkpoints.seen()  # throttled: written by the timer, whatever comes after
        await asyncio.wait_for(fired.wait(), 30)

    asyncio.run(main())
