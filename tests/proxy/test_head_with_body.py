"""The data port's HTTP/1.1 protocol writes a response's head with its body
(proxy/head_with_body.py): the same bytes as uvicorn's own protocol, in fewer writes.

Each case drives uvicorn's real protocol and cycle over a transport that records
its writes: the data port's `SniffingProtocol` beside its parent `HeadTimeoutProtocol`,
which leaves uvicorn's writes as they are."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.config import Config
from uvicorn.server import ServerState

from proxy.h2_server import H2Settings
from proxy.head_timeout import HeadTimeoutProtocol, head_timeout_protocol
from proxy.protocol_sniff import data_port_protocol

App = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

_SETTINGS = H2Settings(max_concurrent_streams=4, max_header_bytes=16384, max_header_count=100, idle_timeout=30)
_REQUEST = b"POST /model/m/converse HTTP/1.1\r\nHost: proxy\r\nContent-Length: 2\r\n\r\n{}"


class _Transport(asyncio.Transport):
    """Records what is written and when the connection is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        if data:
            self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _served(protocol_class: type[HeadTimeoutProtocol], app: App, request: bytes = _REQUEST) -> _Transport:
    """`request` on a new connection served by `protocol_class`; the transport once the app is done."""
    config = Config(app, lifespan="off", access_log=False, log_config=None, server_header=False, date_header=False)
    config.load()
    state = ServerState()
    protocol = protocol_class(config=config, server_state=state, app_state={}, _loop=asyncio.get_running_loop())
    transport = _Transport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    await asyncio.gather(*state.tasks)
    for _ in range(3):  # callbacks the app's last step left
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport


def _both(app: App, request: bytes = _REQUEST) -> tuple[_Transport, _Transport]:
    """(uvicorn's writes, the data port's writes) of the same exchange."""

    async def run() -> tuple[_Transport, _Transport]:
        return (await _served(head_timeout_protocol(20.0), app, request),
                await _served(data_port_protocol(20.0, _SETTINGS), app, request))

    return asyncio.run(asyncio.wait_for(run(), 30))


def _answer(*chunks: bytes, headers: list[tuple[bytes, bytes]] | None = None, pause: bool = False) -> App:
    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                  send: Callable[[Any], Awaitable[None]]) -> None:
        await receive()
        if headers is None:
            declared = [(b"content-length", str(sum(map(len, chunks))).encode())]
        else:
            declared = headers
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), *declared]})
        for chunk in chunks:
            if pause:
                await asyncio.sleep(0.01)  # a stream's next frame is on its way
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def test_a_whole_body_goes_out_with_its_head_in_one_write() -> None:
    plain, joined = _both(_answer(b'{"output":"hi"}'))
    assert len(plain.writes) == 2
    assert joined.writes == [b"".join(plain.writes)]
    assert joined.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and joined.writes[0].endswith(b'{"output":"hi"}')


def test_the_head_does_not_wait_for_a_body_still_on_its_way() -> None:
    """A stream's head goes out before its first frame arrives: alone, at the end of
    the loop step that sent it."""
    frames = (b"frame-1", b"frame-2")
    plain, joined = _both(_answer(*frames, headers=[], pause=True))
    assert joined.writes == plain.writes
    assert joined.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and joined.writes[0].endswith(b"\r\n\r\n")


def test_an_error_answer_closing_the_connection_is_written_before_the_close() -> None:
    plain, joined = _both(_answer(b'{"message":"no"}', headers=[(b"content-length", b"16"), (b"connection", b"close")]))
    assert plain.closed and joined.closed
    assert joined.writes == [b"".join(plain.writes)]


def test_100_continue_goes_out_at_once_and_the_answer_after_it() -> None:
    request = _REQUEST.replace(b"Content-Length: 2\r\n", b"Content-Length: 2\r\nExpect: 100-continue\r\n")
    plain, joined = _both(_answer(b"{}"), request)
    assert joined.writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert b"".join(joined.writes) == b"".join(plain.writes)
    assert len(joined.writes) == 2


def test_a_head_request_gets_its_head() -> None:
    plain, joined = _both(_answer(b"{}"), _REQUEST.replace(b"POST", b"HEAD", 1))
    assert joined.writes == plain.writes and joined.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(st.binary(min_size=0, max_size=40), max_size=4), chunked=st.booleans(),
       pauses=st.lists(st.booleans(), min_size=4, max_size=4), close=st.booleans())
def test_the_bytes_on_the_wire_are_uvicorns(chunks: list[bytes], chunked: bool, pauses: list[bool],
                                            close: bool) -> None:
    """Whatever the app sends and whenever: the same bytes in the same order, the same close,
    and never more writes than uvicorn's."""

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                  send: Callable[[Any], Awaitable[None]]) -> None:
        await receive()
        headers = [] if chunked else [(b"content-length", str(sum(map(len, chunks))).encode())]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for chunk, pause in zip(chunks, pauses, strict=False):
            if pause:
                await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    plain, joined = _both(app)
    assert b"".join(joined.writes) == b"".join(plain.writes)
    assert joined.closed == plain.closed
    assert len(joined.writes) <= len(plain.writes)
