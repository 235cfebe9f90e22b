"""The bound a graceful shutdown puts on open bidirectional streams.

On SIGTERM the data port stops accepting (GOAWAY on HTTP/2) and waits for the requests
in flight (proxy/serve.py, proxy/h2_server.py). A response stream ends on its own
within a generation's time; an InvokeModelWithBidirectionalStream conversation lasts
until the client ends it, up to Bedrock's 8 minutes, longer than a pod's grace period.
So `server.stream_drain_timeout` seconds after the signal, each stream still open is cut
(proxy/bidi_relay.py: the client gets a `serviceUnavailableException` frame, the usage
seen is metered, flagged estimated) and the shutdown goes on to flush the metering.

One `StreamDrain` per process, kept across config reloads (a stream opened under an
older configuration is cut as well).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

__all__ = ["StreamDrain"]

logger = logging.getLogger(__name__)


class StreamDrain:
    """The cuts of the open streams; `begin(seconds)` calls them that much later."""

    def __init__(self) -> None:
        self._cuts: set[Callable[[], None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._cutting = False

    def opened(self, cut: Callable[[], None]) -> None:
        """A stream opened; `cut()` ends it (once, from the event loop)."""
        if self._cutting:  # opened after the bound (an HTTP/2 stream GOAWAY did not cover)
            asyncio.get_running_loop().call_soon(cut)
        else:
            self._cuts.add(cut)

    def closed(self, cut: Callable[[], None]) -> None:
        self._cuts.discard(cut)

    def begin(self, seconds: float) -> None:
        """The shutdown started: cut what is still open in `seconds`. Idempotent."""
        if self._timer is not None or self._cutting:
            return
        if self._cuts:
            logger.info("shutting down: %d open stream(s), cut in %g s unless they end",
                        len(self._cuts), seconds)
        self._timer = asyncio.get_running_loop().call_later(seconds, self._cut_all)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _cut_all(self) -> None:
        self._timer = None
        self._cutting = True
        if self._cuts:
            logger.warning("cutting %d open stream(s) %s", len(self._cuts),
                           "at the end of the shutdown's bound (server.stream_drain_timeout)")
        for cut in list(self._cuts):
            cut()
        self._cuts.clear()
