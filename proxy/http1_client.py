"""One HTTP/1.1 connection to Bedrock: an `asyncio.Protocol` around httptools' response parser.

The proxy's upstream client (proxy/upstream.py) is this and its pool
(proxy/http1_pool.py), not aiohttp: on this path aiohttp cost ~24 % of the proxy's CPU
(py-spy, `costkeeper serve` at c=16 Converse, issue #20), more than anything else, for
features the proxy never uses (cookies, redirects, proxies, auto headers, decompression).
The same llhttp parser, through httptools, is what uvicorn's server side already runs.

What it does, and only that:
- writes the request head exactly as given (the path as signed, the signed headers in
  their order, then `Content-Length`), nothing added; the body in the same write;
- parses the response: status, raw header bytes in order, the body de-chunked and never
  decompressed (Content-Length, chunked, until-close, none for 1xx/204/304/HEAD);
- flow control: never buffers a stream — reading pauses while more than `HIGH_WATER`
  body bytes wait for the consumer, and resumes when it has taken them;
- read timeout: silence between two bytes (before and during the body) longer than
  `read_timeout` fails the response (`ReadTimeoutError`); time paused for a slow
  consumer is not silence. One timer per connection, re-armed lazily, not per byte;
- knows whether it can carry another request: the response was read to its end, was
  HTTP/1.1 keep-alive (not `Connection: close`, not HTTP/1.0), and nothing came after it.

Errors (`ClientError`, each with `answered`: a byte of the answer had arrived, so the
request reached the upstream):
    ClientError
    ├── ConnectError            could not open a connection (refused, DNS, TLS)
    ├── ConnectTimeoutError     no connection in time (pool wait + connect); a TimeoutError
    ├── ServerDisconnectedError the upstream closed the connection before the response ended
    ├── ConnectionBrokenError   a socket error (reset, broken pipe): `errno`
    ├── MalformedResponseError  bytes that are not an HTTP/1.1 response
    └── ReadTimeoutError        silence longer than `read_timeout`; a TimeoutError
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import httptools
from multidict import CIMultiDict

__all__ = [
    "HIGH_WATER", "MAX_HEAD", "ClientError", "ConnectError", "ConnectTimeoutError", "Connection", "ConnectionBrokenError",
    "TIMER_SLACK", "MalformedResponseError", "ReadTimeoutError", "ServerDisconnectedError", "headers_of",
    "request_head",
]

#: Unread body bytes above which the connection stops reading from the socket. One
#: `data_received` may bring up to asyncio's read size (256 KiB) beyond it.
HIGH_WATER = 64 * 1024
#: A response head beyond this is refused, not buffered (aiohttp refused a line over 8 KiB).
MAX_HEAD = 64 * 1024
#: asyncio may run a timer this early (its clock resolution); within it, it is due.
TIMER_SLACK = 0.001


class ClientError(Exception):
    """A request failed. `answered`: a byte of the answer had arrived; `reused`: on a
    connection that had carried a request before (set by the pool)."""

    answered = False
    reused = False


class ConnectError(ClientError):
    """Could not open a connection: refused, unresolvable, or a TLS handshake that failed."""


class ConnectTimeoutError(ClientError, TimeoutError):
    """No connection within the pool wait and connect timeouts."""


class ServerDisconnectedError(ClientError):
    """The upstream closed the connection before the response ended."""


class ConnectionBrokenError(ClientError):
    """A socket error: reset, broken pipe."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.errno = cause.errno


class MalformedResponseError(ClientError):
    """Bytes that are not an HTTP/1.1 response (a bad status line, a bad chunk)."""


class ReadTimeoutError(ClientError, TimeoutError):
    """No byte from the upstream for `read_timeout` seconds."""


def request_head(method: str, path: str, headers: Mapping[str, str], body_length: int) -> bytes:
    """The request line and headers, as given, and `Content-Length` (always, as aiohttp
    sent it). Raises ValueError for a CR or LF inside a path, a name or a value."""
    lines = [f"{method} {path} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items()),
             f"Content-Length: {body_length}", "\r\n"]
    head = "\r\n".join(lines)
    # One count over the whole head instead of a check per header: every CR and LF is one of ours.
    if head.count("\n") != len(lines) or head.count("\r") != len(lines):
        raise ValueError("CR or LF in an upstream request's path or headers")
    return head.encode("utf-8")


class Connection(asyncio.Protocol):
    """One connection, one request at a time. Created by the pool's `create_connection`;
    `on_done(connection, reusable)` gives it back to the pool when its response is ended."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float,
                 on_done: Callable[[Connection, bool], None]) -> None:
        self._loop = loop
        self._read_timeout = read_timeout
        self._on_done = on_done
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self.closed = False
        #: The pool's key for it (its endpoint).
        self.origin: Hashable = None
        #: Has carried a request before (a pooled connection).
        self.reused = False
        #: When it went back to the pool (loop time).
        self.idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._last = 0.0  # loop time of the last byte received (or of the request)
        # The exchange in flight.
        self._active = False
        self._head: asyncio.Future[None] | None = None
        self._head_only = False
        self._answered = False
        self._informational = False
        self._head_bytes = 0
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._complete = False
        self._keep = False
        self._failure: ClientError | None = None
        self._waiter: asyncio.Future[None] | None = None

    # --- the exchange, for the pool and the response ----------------------------------

    async def request(self, head: bytes, body: bytes, head_only: bool = False) -> None:
        """Write the request; return when the response's head has arrived."""
        self._active, self._head_only, self._answered, self._head_bytes = True, head_only, False, 0
        self._complete = self._keep = self._informational = False
        self.raw_headers, self._body, self._buffered, self._failure = [], [], 0, None
        self._head = self._loop.create_future()
        self._last = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(self._last + self._read_timeout, self._check_silence)
        transport = self._transport
        assert transport is not None
        if len(body) <= HIGH_WATER:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)
        # The body is bytes in hand: waiting for the transport's buffer to drain would free
        # nothing (and an answer may come before the body is all sent, e.g. a 413).
        await self._head

    @property
    def body_in_hand(self) -> bool:
        """The whole body has arrived: reading it waits on nothing."""
        return self._complete

    async def next_chunk(self) -> bytes:
        """The body bytes that arrived since the last call (b"" at the end), waiting for some."""
        while not self._body:
            if self._complete:
                return b""
            if self._failure is not None:
                raise self._failure
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.take()

    def take(self) -> bytes:
        """The body bytes that arrived since the last call, without waiting (b"" if none):
        a body already in hand whole is read without a coroutine (issue #20)."""
        body = self._body
        if not body:
            return b""
        chunk = body[0] if len(body) == 1 else b"".join(body)
        self._body, self._buffered = [], 0
        if self._paused:
            self._paused = False
            self._last = self._loop.time()  # paused for the consumer: not the upstream's silence
            if self._transport is not None and not self.closed:
                self._transport.resume_reading()
        return chunk

    def release(self) -> None:
        """The response is ended: back to the pool if it was read to its end and the
        connection can carry another request; closed otherwise."""
        reusable = self._complete and self._keep and not self._body and not self.closed
        self._active = False
        if not reusable:
            self.close_idle()
        self._on_done(self, reusable)

    def close(self) -> None:
        """Abandon the response: the connection is dropped (how a hang-up reaches Bedrock)."""
        self._active = False
        self.close_idle()
        self._fail(ServerDisconnectedError("the response was closed"))
        self._on_done(self, False)

    def usable(self) -> bool:
        """Idle and able to carry another request."""
        return not self.closed and self._keep and not self._active

    def close_idle(self) -> None:
        """Close it, whatever it is doing (the pool's: expired, shut down, not reusable)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        self._keep = False

    def _fail(self, failure: ClientError) -> None:
        """The exchange cannot go on: the waiting request or reader gets `failure`."""
        self._keep = False
        if self._complete or self._failure is not None:
            return
        failure.answered = self._answered
        self._failure = failure
        head = self._head
        if head is not None and not head.done():
            head.set_exception(failure)
            head.exception()  # retrieved here: a cancelled request never awaits it
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _check_silence(self) -> None:
        self._timer = None
        if self.closed or not self._active or self._complete or self._failure is not None:
            return  # nothing awaited from the upstream; armed again by the next request
        now = self._loop.time()
        if self._paused:
            self._last = now
        due = self._last + self._read_timeout
        if due - now > TIMER_SLACK:
            self._timer = self._loop.call_at(due, self._check_silence)
            return
        self._fail(ReadTimeoutError(f"no byte from the upstream for {self._read_timeout:g} s"))
        self.close_idle()

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if not self._active or self._complete:
            # Nothing was asked: a late 408, garbage. The connection cannot be trusted.
            self.close_idle()
            return
        self._last = self._loop.time()
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:  # after a complete response: only retires it
            self._fail(MalformedResponseError(f"{type(exc).__name__}: {exc}"))
            self.close_idle()
            return
        if self._head is not None and not self._head.done():  # all of it was head
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._fail(MalformedResponseError(f"a response head over {MAX_HEAD} bytes"))
                self.close_idle()

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost says what it means

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._keep = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._active or self._complete:
            return
        if exc is None and self._head is not None and self._head.done() and self._until_close():
            self._complete = True  # a body delimited by the end of the connection (RFC 9112 §6.3)
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)
            return
        if isinstance(exc, OSError):
            self._fail(ConnectionBrokenError(exc))
        else:
            self._fail(ServerDisconnectedError(
                "the upstream closed the connection" + ("" if self._answered else " before answering")))

    def _until_close(self) -> bool:
        """The response head has neither Content-Length nor chunked Transfer-Encoding."""
        return not any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self.raw_headers)

    # --- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:  # a second answer to one request: stop parsing (data_received)
            raise MalformedResponseError("bytes after the response")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # informational: the answer follows
            self._informational = True
            self.raw_headers = []
            return
        self.status = status
        if self._head_only:  # HEAD: no body whatever the headers say (never reused: simpler)
            self._complete = True
        head = self._head
        if head is not None and not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._complete:
            return
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self._complete:
            return
        self._complete = True
        self._keep = self._parser.should_keep_alive() and self._parser.get_http_version() == "1.1"
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def headers_of(raw: list[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    """Case-insensitive, decoded as aiohttp decodes them (UTF-8, undecodable bytes kept).
    Strict UTF-8 first: for valid bytes it is the same text, and naming no error handler
    took a fifth off a response's headers (issue #20)."""
    try:
        return CIMultiDict([(name.decode(), value.decode()) for name, value in raw])
    except UnicodeDecodeError:
        return CIMultiDict([(name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
                            for name, value in raw])
