"""The HTTP/2 connection closes without losing the end of its last response.

When the last stream ends on a connection that is closing (a GOAWAY sent at shutdown,
or received: the AWS SDK for JavaScript sends one right after an event stream's head),
the proxy closes the connection. A client still reading sends WINDOW_UPDATEs and PINGs.
Closing a socket with a client byte unread makes the kernel reset the connection, and
a reset drops what the kernel has not sent yet: the end of the response. Reproduced
here with a client that reads through a small receive buffer and acknowledges what it
reads, as clients do. The connection half-closes instead
(a FIN after the last byte), reads and drops what the client still sends, and closes
when the client does or `_LINGER_SECONDS` later."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
import uvloop

import proxy.h2_server
from tests.proxy.test_h2_server import run, serve

#: Larger than a loopback socket's send buffer (4 MiB at most) and the client's receive buffer together.
BODY = 16 * 1024 * 1024
#: The client's windows (stream and connection): it acknowledges as it reads.
_WINDOW = 1024 * 1024


async def big(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
              send: Callable[[Any], Awaitable[None]]) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    chunk = b"x" * (1024 * 1024)
    for _ in range(BODY // len(chunk) - 1):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": chunk})


class _ReadsOnAfterGoaway(h2.connection.H2Connection):
    """h2's client connection, reading on after the proxy's GOAWAY as Node.js does (RFC 9113
    §6.8): h2 alone closes its state on it and refuses the DATA that follows in the same read."""

    def _receive_goaway_frame(self, frame: Any) -> Any:
        result = super()._receive_goaway_frame(frame)
        self.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        return result


def _slow_client(port: int, *, close_after: bool, goaway: bool = True) -> tuple[int, bool, str]:
    """Request, say GOAWAY (as the AWS SDK for JavaScript does), then read the response
    through a small receive buffer, acknowledging DATA as any client does (a
    WINDOW_UPDATE each time half the 1 MiB window is read): the last ones reach the
    proxy after it has closed. The body's bytes, whether the stream ended, and how the
    reading ended."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(30)
    conn = _ReadsOnAfterGoaway(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.local_settings = h2.settings.Settings(client=True, initial_values={
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW})
    conn.initiate_connection()
    conn.increment_flow_control_window(_WINDOW - 65535)
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(stream_id, [(b":method", b"POST"), (b":path", b"/model/x/converse"), (b":scheme", b"http"),
                                  (b":authority", b"127.0.0.1")], end_stream=True)
    if goaway:
        conn.close_connection()  # GOAWAY (NO_ERROR): the proxy closes once the stream ends
    sock.sendall(conn.data_to_send())
    received, ended, how = 0, False, "eof"
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN  # read on after its own GOAWAY
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    received += len(event.data or b"")
                    conn.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            sock.sendall(conn.data_to_send())
            if ended and close_after:
                break
    except OSError as exc:
        how = type(exc).__name__
    finally:
        if close_after:
            sock.close()
        else:
            _LEFT_OPEN.append(sock)
    return received, ended, how


#: Client sockets a test leaves open on purpose (closed at its end).
_LEFT_OPEN: list[socket.socket] = []


async def _closed(connections: set[Any]) -> None:
    """Until the server has no connection left (uvicorn's state set: nothing signals it)."""
    while connections:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def _in_loop(loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
             test: Callable[[], Awaitable[None]]) -> None:
    """`test` on asyncio's loop, or on uvloop's (the proxy's), bounded so a hang fails."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(asyncio.wait_for(test(), 60))


@pytest.mark.parametrize("loop_factory", [None, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
@pytest.mark.parametrize("closing", ["client-goaway", "server-shutdown"])
def test_the_last_response_arrives_whole_when_the_client_still_writes(
        closing: str, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None) -> None:
    """The client's GOAWAY (the AWS SDK for JavaScript's, after the head) or the proxy's
    own at shutdown (SIGTERM), the stream then finishing: the whole body, then a FIN."""
    async def test() -> None:
        answering = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                      send: Callable[[Any], Awaitable[None]]) -> None:
            answering.set()
            await big(scope, receive, send)

        async with serve(app) as (port, connections, _):
            reading = asyncio.ensure_future(asyncio.to_thread(
                _slow_client, port, close_after=True, goaway=closing == "client-goaway"))
            if closing == "server-shutdown":
                await answering.wait()
                for connection in list(connections):
                    connection.shutdown()  # what uvicorn calls on SIGTERM
            received, ended, how = await reading
            assert (received, ended, how) == (BODY, True, "eof")
            await asyncio.wait_for(_closed(connections), 20)  # closed once the client closed

    _in_loop(loop_factory, test)


@run
async def test_a_client_that_never_closes_is_closed_after_the_linger_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy.h2_server, "_LINGER_SECONDS", 0.2)
    try:
        async with serve(big) as (port, connections, _):
            received, ended, _ = await asyncio.to_thread(_slow_client, port, close_after=False)
            assert (received, ended) == (BODY, True)  # read to the proxy's FIN, then left open
            await asyncio.wait_for(_closed(connections), 20)
    finally:
        for sock in _LEFT_OPEN:
            sock.close()
        _LEFT_OPEN.clear()
