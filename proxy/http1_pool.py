"""The pool of HTTP/1.1 connections to Bedrock (proxy/http1_client.py is one connection).

As aiohttp's `TCPConnector` did for the proxy before (proxy/upstream.py):
- at most `max_connections` in use at once, over every endpoint; a request beyond
  them waits for one to come back, in order of arrival;
- the connect phase — the wait for a free connection plus opening one — is bounded by
  `pool_timeout + connect_timeout`, opening one (TCP and TLS) by `connect_timeout`;
- a connection goes back to the pool only when its response was read to its end and
  it can carry another request; the most recently used one is handed out first, and
  one idle longer than `keepalive_timeout` is closed (one sweep timer for the pool);
- TLS for https endpoints with the system's trust store (`ssl.create_default_context()`,
  as aiohttp used), SNI and certificate check for the endpoint's host;
- `fresh=True` (the stale-connection retry, proxy/upstream.py): the endpoint's idle
  connections are closed (as old as the one the upstream just closed) and a new one opened.

A request cancelled before its response head, or one that failed, closes its connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

from yarl import URL

from proxy.http1_client import (
    TIMER_SLACK,
    ClientError,
    ConnectError,
    Connection,
    ConnectTimeoutError,
)

__all__ = ["Origin", "Pool"]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests for one base URL go."""

    host: str
    port: int
    tls: bool
    #: The base URL's path, before each request's (as signed: the whole URL is).
    prefix: str = ""
    #: The hash of the fields, computed once: the pool looks an origin up twice a request,
    #: and a dataclass's `__hash__` builds and hashes a tuple each time (issue #20).
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.host, self.port, self.tls, self.prefix)))

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def of(cls, base_url: str) -> Origin:
        url = URL(base_url, encoded=True)
        if url.scheme not in ("http", "https") or not url.host or url.port is None:
            raise ValueError(f"not an http(s) endpoint URL: {base_url!r}")
        return cls(url.host, url.port, url.scheme == "https", url.raw_path.rstrip("/"))


class Pool:
    """Keep-alive connections to Bedrock's endpoints (one event loop)."""

    def __init__(self, *, max_connections: int, pool_timeout: float, connect_timeout: float, read_timeout: float,
                 keepalive_timeout: float) -> None:
        self._max = max_connections
        self._pool_timeout = pool_timeout
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._keepalive = keepalive_timeout
        #: Made at the first https connection (`ssl.create_default_context()` reads the store).
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[Hashable, list[Connection]] = {}
        #: Connections handed out (or being opened for a request): bounded by `_max`.
        self._in_use = 0
        self._leased: set[Connection] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def idle(self) -> int:
        return sum(len(connections) for connections in self._idle.values())

    async def request(self, origin: Origin, head: bytes, body: bytes, *, head_only: bool = False,
                      fresh: bool = False) -> Connection:
        """Send on a pooled connection (or a new one); return it once the response head
        has arrived. It is in use until its `release()` or `close()`."""
        loop = asyncio.get_running_loop()
        connect_timeout = self._connect_timeout
        if self._in_use < self._max and not self._waiters:
            self._in_use += 1
        else:
            waited_from = loop.time()
            await self._wait()
            connect_timeout = min(connect_timeout, waited_from + self._pool_timeout + connect_timeout - loop.time())
        try:
            connection = self._pooled(origin, fresh, loop.time()) or await self._open(origin, loop, connect_timeout)
        except BaseException:
            self._free_slot()
            raise
        self._leased.add(connection)
        try:
            await connection.request(head, body, head_only)
        except BaseException as exc:
            if isinstance(exc, ClientError):
                exc.reused = connection.reused
            connection.close()  # a failed or cancelled request: never back to the pool
            raise
        connection.reused = True
        return connection

    async def aclose(self) -> None:
        """Close every connection, idle or in use."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for connection in [*self._leased, *(c for idle in self._idle.values() for c in idle)]:
            connection.close_idle()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports call connection_lost

    def _pooled(self, origin: Origin, fresh: bool, now: float) -> Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if not fresh and connection.usable() and now - connection.idle_since < self._keepalive:
                return connection
            connection.close_idle()
        return None

    async def _open(self, origin: Origin, loop: asyncio.AbstractEventLoop, within: float) -> Connection:
        context = None
        if origin.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(within):
                _, connection = await loop.create_connection(
                    lambda: Connection(loop, self._read_timeout, self._done), origin.host, origin.port,
                    ssl=context, server_hostname=origin.host if context else None)
        except TimeoutError as exc:
            raise ConnectTimeoutError(f"no connection to {origin.host}:{origin.port} within {within:g} s") from exc
        except OSError as exc:  # refused, unresolvable, TLS (ssl.SSLError is an OSError)
            raise ConnectError(f"{type(exc).__name__}: {exc}") from exc
        connection.origin = origin
        return connection

    async def _wait(self) -> None:
        """Wait for a connection to come back (its slot passes to this request)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._pool_timeout + self._connect_timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._free_slot()  # handed the slot as it gave up: pass it on
            else:
                waiter.cancel()
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass  # cancelled, then skipped (and dropped) by a `_free_slot` before this ran
            if isinstance(exc, TimeoutError):
                raise ConnectTimeoutError(
                    f"no free upstream connection within {self._pool_timeout + self._connect_timeout:g} s") from exc
            raise

    def _free_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._in_use -= 1

    def _done(self, connection: Connection, reusable: bool) -> None:
        """A connection's exchange ended (its `release()` or `close()`)."""
        if connection not in self._leased:
            return  # ended before: nothing to give back
        self._leased.discard(connection)
        self._free_slot()
        if not reusable or self._closed:
            connection.close_idle()
            return
        loop = asyncio.get_running_loop()
        connection.idle_since = now = loop.time()
        self._idle.setdefault(connection.origin, []).append(connection)
        if self._sweep is None:
            self._sweep = loop.call_at(now + self._keepalive, self._expire)

    def _expire(self) -> None:
        """Close the connections idle for `keepalive_timeout`; come back for the others."""
        self._sweep = None
        now = asyncio.get_running_loop().time()
        oldest = None
        for origin, idle in list(self._idle.items()):
            kept = []
            for connection in idle:
                if connection.usable() and now - connection.idle_since < self._keepalive - TIMER_SLACK:
                    kept.append(connection)
                    oldest = connection.idle_since if oldest is None else min(oldest, connection.idle_since)
                else:
                    connection.close_idle()
            if kept:
                self._idle[origin] = kept
            else:
                del self._idle[origin]
        if oldest is not None:
            self._sweep = asyncio.get_running_loop().call_at(oldest + self._keepalive, self._expire)
