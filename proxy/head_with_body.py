"""A response's head goes out in the same `write(2)` as the start of its body.

uvicorn's HTTP/1.1 cycle writes the status line and headers to the socket as soon
as the app sends `http.response.start`, then each body chunk in a write of its
own: two `send(2)` calls for every non-streamed answer, and on loopback each is a
trip through the TCP stack and a wake-up of the reader. In the profile of the
served proxy (issue #20) those two writes were the top leaf of the whole process.
`HeadWithBody` stands between one request's cycle and the connection's transport,
holds the head, and writes it together with the first body bytes that follow.

The head never waits for the body: if nothing else is written in the same step
of the event loop (a stream whose first frame is still on its way), the head goes
out alone when the loop next runs its ready callbacks, as early as uvicorn would
have written it, give or take the rest of that step. The bytes on the wire and
their order are unchanged; only how they are split into writes differs.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

__all__ = ["HeadWithBody"]


class _Cycle(Protocol):
    """What `HeadWithBody` reads of uvicorn's `RequestResponseCycle`."""

    response_started: bool


class HeadWithBody:
    """The transport one request's cycle writes to (see the module docstring).

    The cycle's first write once its response has started is the head (uvicorn's
    `send` sets `response_started` before it writes it; the only write before, a
    `100 Continue`, goes straight through). Everything else is the real transport's."""

    __slots__ = ("_transport", "_cycle", "_loop", "_head", "_headed")

    def __init__(self, transport: asyncio.Transport, cycle: _Cycle, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._cycle = cycle
        self._loop = loop
        #: The head, while it waits for body bytes to go with.
        self._head: bytes | None = None
        #: The head has been written (or is held): later writes are the body's.
        self._headed = False

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif not self._headed and self._cycle.response_started:
            self._headed = True
            self._head = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        """The head, alone: no body bytes followed it within the step that wrote it."""
        head, self._head = self._head, None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        # What uvicorn's cycle may ask of a transport beyond the above (get_extra_info …).
        return getattr(self._transport, name)
