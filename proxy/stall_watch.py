"""Cancel the reading of a request body that stalls: `timeout` seconds without a chunk.

`asyncio.timeout` around each `receive()` cost 10 µs a chunk (a timer armed and
cancelled each time), 3 % of a request's CPU (bench/RESULTS.md). One timer per body,
moved on only when it fired, still cost 4.5 µs a request: a timer handle made,
pushed on the loop's heap and cancelled, for a body that is nearly always in hand
before it could fire (issue #20). So the bodies being read on a loop share one
timer: it comes due when the first of them would stall, and each time it fires it
cancels the reads that did and is armed again for the next due one. A body costs a
clock read and a dict entry; the deadline is the same, to the loop's clock.
"""

from __future__ import annotations

import asyncio
import math

__all__ = ["StallWatch"]


class _Stalls:
    """The stall watches of one event loop, and their one timer."""

    __slots__ = ("_due", "_handle", "loop", "watches")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.watches: dict[StallWatch, None] = {}
        self._handle: asyncio.TimerHandle | None = None
        #: When the timer fires (inf: no timer).
        self._due = math.inf

    def add(self, watch: StallWatch, due: float) -> None:
        self.watches[watch] = None
        if due < self._due:  # the first watch, or one due sooner than the timer (a shorter timeout)
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._due = due
        self._handle = self.loop.call_at(due, self.sweep)

    def sweep(self) -> None:
        """Cancel the reads that stalled; arm the timer for the first of the others."""
        self._handle = None
        self._due = math.inf
        now = self.loop.time()
        first = math.inf
        for watch in list(self.watches):
            due = watch.last + watch.timeout
            if now >= due:
                del self.watches[watch]
                watch.fire()
            elif due < first:
                first = due
        if first < math.inf:
            self._arm(first)


#: The watches of the loop that last started one. Another loop (another thread, the
#: next `asyncio.run`) gets its own; watches keep theirs, so each is checked by its loop.
_current: _Stalls | None = None


class StallWatch:
    """Cancels the task that starts it once `timeout` seconds pass without `fed()`;
    `stop()` when the body is read (or the read ended otherwise)."""

    __slots__ = ("_stalls", "_task", "fired", "last", "timeout")

    def __init__(self, timeout: float) -> None:
        global _current  # noqa: PLW0603 (one entry, replaced whole)
        loop = asyncio.get_running_loop()
        stalls = _current
        if stalls is None or stalls.loop is not loop:
            stalls = _current = _Stalls(loop)
        self._stalls = stalls
        self._task = asyncio.current_task()
        self.timeout = timeout
        self.fired = False
        #: The loop's time of the last chunk (or of the start).
        self.last = loop.time()
        stalls.add(self, self.last + timeout)

    def fed(self) -> None:
        self.last = self._stalls.loop.time()

    def fire(self) -> None:
        if self._task is not None:
            self.fired = True
            self._task.cancel()

    def forgive(self) -> None:
        """The cancellation was ours: take it back, so the task answers the client."""
        if self._task is not None:
            self._task.uncancel()

    def stop(self) -> None:
        self._stalls.watches.pop(self, None)
