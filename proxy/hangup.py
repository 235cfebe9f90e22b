"""A client hanging up mid-response: notice it, and read what usage is still coming.

`HangUpWatch` cancels the relaying task when the server says the client is gone.

`read_tail` then keeps reading the upstream, without relaying, until the usage
is known, the body ends, or a bound is reached (`limits.hangup_tail_seconds`,
`limits.hangup_tail_bytes`). Without it a client chose what it was billed: one
that left a ConverseStream right after `messageStop`, before the `metadata`
frame, was metered the bytes-based estimate (406 µ$) while Bedrock billed the
real count (809 µ$, issue #16). The bound matters the other way: while the proxy
reads, Bedrock may keep generating output it bills, so an early hang-up in a long
stream costs at most the bound before the upstream is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import aclosing

from starlette.types import Receive

from proxy.config import LimitsConfig
from proxy.upstream import UpstreamBroken, UpstreamResponse

__all__ = ["HangUpWatch", "read_tail"]


class HangUpWatch:
    """Cancels the relaying task when the client hangs up. One bare asyncio task: an
    anyio task group per response cost ~8 % of the CPU of a request (bench/RESULTS.md)."""

    __slots__ = ("_gone", "_relay", "_stopped", "_task")

    def __init__(self, receive: Receive) -> None:
        self._relay = asyncio.current_task()
        self._gone = False
        self._stopped = False
        self._task = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        # The server also says "disconnect" once the response is complete: `stop()` comes first then.
        if not self._stopped and self._relay is not None:
            self._gone = True
            self._relay.cancel()

    def stop(self) -> bool:
        """No more watching (call before the last byte goes out); whether the client was gone."""
        if not self._stopped:
            self._stopped = True
            self._task.cancel()
        return self._gone

    def forgive(self) -> None:
        """The cancellation was ours: take it back so the request ends normally."""
        if self._relay is not None:
            self._relay.uncancel()


async def read_tail(response: UpstreamResponse, feed: Callable[[bytes], bool], limits: LimitsConfig) -> bool:
    """Give the upstream's next bytes to `feed`, which returns True once the usage is
    known, within the configured bounds. True if the body was read to its end (the
    connection can go back to the pool); False if it stopped early (close it)."""
    budget = limits.hangup_tail_bytes
    if budget <= 0 or limits.hangup_tail_seconds <= 0:
        return False
    try:
        # Closed where it stops, not left to asyncio's finalizer (a task per occurrence, issue #20).
        async with asyncio.timeout(limits.hangup_tail_seconds), aclosing(response.chunks()) as chunks:
            async for chunk in chunks:
                budget -= len(chunk)
                if feed(chunk) or budget <= 0:
                    return False
            return True
    except (TimeoutError, UpstreamBroken):
        return False
