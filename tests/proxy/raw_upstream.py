"""A scripted HTTP/1.1 upstream on 127.0.0.1 for the upstream client's tests: each
connection is handed to a coroutine that reads requests and writes whatever bytes the
test wants (well-formed or not), so the tests can see connections open, get reused,
and close."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from proxy.config_load import load_config
from proxy.http1_client import Connection, request_head
from proxy.http1_pool import Origin, Pool
from proxy.upstream import Upstream

__all__ = ["OK", "Peer", "Served", "ok", "pool_request", "raw_upstream", "upstream_for"]


def ok(body: bytes = b"{}", *extra: str) -> bytes:
    """A 200 with a Content-Length body."""
    head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-amzn-requestid: r\r\n"
    head += "".join(f"{line}\r\n" for line in extra)
    return f"{head}content-length: {len(body)}\r\n\r\n".encode() + body


OK = ok()


@dataclass
class Peer:
    """One accepted connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    #: Requests read on it: (head, body).
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: Set when the client has closed it (end of stream or reset).
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    async def request(self) -> bytes | None:
        """The next request's head (its body read too); None when the client closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        try:
            body = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        self.requests.append((head, body))
        return head

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_closed(self) -> None:
        """Read until the client closes the connection."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass


@dataclass
class Served:
    url: str
    peers: list[Peer]
    #: Set each time a connection is accepted (cleared by the test).
    accepted: asyncio.Event


@asynccontextmanager
async def raw_upstream(behave: Callable[[Peer], Awaitable[None]],
                       tls: ssl.SSLContext | None = None) -> AsyncIterator[Served]:
    """Serve `behave` for each connection; once it returns, the connection is closed when
    the client closes it (`behave` closes `writer` itself to close it first)."""
    peers: list[Peer] = []
    accepted = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        peers.append(peer)
        accepted.set()
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await behave(peer)
            await peer.until_closed()
        except asyncio.CancelledError:
            pass  # the test is over (a cancelled handler would be logged as an error by asyncio)
        finally:
            peer.gone.set()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Served(f"{'https://localhost' if tls else 'http://127.0.0.1'}:{port}", peers, accepted)
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def pool_request(pool: Pool, url: str, body: bytes = b"{}", method: str = "POST", *,
                       fresh: bool = False) -> Connection:
    """A request as `Upstream.send` makes it, through `pool`."""
    origin = Origin.of(url)
    head = request_head(method, "/model/m/converse", {"host": f"{origin.host}:{origin.port}"}, len(body))
    return await pool.request(origin, head, body, head_only=method == "HEAD", fresh=fresh)


def upstream_for(tmp_path: Path, url: str, on_retry: Callable[[], None] | None = None,
                 **settings: float) -> Upstream:
    """An `Upstream` for `url` with `upstream.<settings>` (credentials from the environment)."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"region": "us-east-1", "upstream": {"endpoint_url": url, **settings}}))
    return Upstream(load_config(path, environ={}), on_retry=on_retry)
