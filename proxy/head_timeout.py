"""A request head must be complete within `limits.head_timeout` seconds, or the
connection is closed.

uvicorn has no such timeout (0.55, read in `uvicorn/protocols/http/httptools_impl.py`):
it arms a timer only between two requests of a kept-alive connection
(`timeout_keep_alive`), so a connection that sends nothing, or a head one line
every few seconds (slow loris), stays open for ever, a file descriptor and a
parser each. The data port's own checks (proxy/limits.py, proxy/identity.py)
only run once a head is complete.

`head_timeout_protocol(seconds)` is uvicorn's httptools protocol with one more
timer, installed through uvicorn's `http=` setting (proxy/serve.py): from when a
connection opens, or when the first byte of a kept-alive connection's next
request arrives, until the head is complete. When it fires, a client
that had begun a head is told why (a Bedrock-shaped 408
`RequestTimeoutException`, which SDKs retry), then the connection is closed.
The body has its own timeout (`limits.body_timeout`, proxy/request.py).

Pipelined requests (which no Bedrock SDK sends) queue while an earlier response
is still going out; a head that stays incomplete meanwhile is cut like any other.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.errors import RequestTimeoutException, error_parts, new_request_id

__all__ = ["HeadTimeoutProtocol", "head_timeout_protocol", "timeout_response"]


def timeout_response(seconds: float) -> bytes:
    """The raw 408 (with `connection: close`) for a head not complete within `seconds`."""
    error = RequestTimeoutException(f"Your request head was not received within the timeout period ({seconds:g} s).")
    status, headers, payload = error_parts(error, new_request_id())
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()]
    lines += [name + b": " + value for name, value in [*headers, (b"connection", b"close")]]
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, cutting connections whose request head stalls.

    A head that arrives in one read (what SDKs send) never arms a timer: one is armed
    only when a read ends inside a head, due `head_timeout` after that head began; the
    only other timer is the one a new connection gets until its first head is in."""

    #: Seconds from connection (or next request) start to the head's end.
    head_timeout: ClassVar[float] = 20.0

    _head_timer: asyncio.TimerHandle | None = None
    #: Bytes of a head have arrived (a connection that said nothing is closed unanswered).
    _in_head = False
    _head_started = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_at(self._head_started + self.head_timeout, self._head_timed_out)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_started = self.loop.time()

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        self._in_head = False
        super().on_headers_complete()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        # Answer only if no earlier response is still going out on this connection.
        if self._in_head and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(timeout_response(self.head_timeout))
        self.transport.close()


def head_timeout_protocol(seconds: float) -> type[HeadTimeoutProtocol]:
    """The protocol class for uvicorn's `http=`, with `seconds` as its head timeout."""
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"head_timeout": seconds})
