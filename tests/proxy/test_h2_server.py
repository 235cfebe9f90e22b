"""The data port's HTTP/2 protocol (proxy/h2_server.py) against an `h2` client on a socket:
flow control, hang-ups, limits, graceful shutdown, and the sniff that picks it."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.frame_buffer
import h2.settings
import hyperframe.frame
import pytest

from proxy.h2_server import H2Protocol, H2Settings
from proxy.protocol_sniff import PREFACE

App = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def run(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """A sync test running `test` in its own event loop (bounded, so a hang fails)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 60))

    return wrapper


SETTINGS = H2Settings(max_concurrent_streams=4, max_header_bytes=16384, max_header_count=100, idle_timeout=30)


@asynccontextmanager
async def serve(app: App, settings: H2Settings = SETTINGS) -> AsyncIterator[tuple[int, set[Any], set[Any]]]:
    loop = asyncio.get_running_loop()
    connections: set[Any] = set()
    tasks: set[Any] = set()
    server = await loop.create_server(
        lambda: H2Protocol(app, settings, connections=connections, tasks=tasks, loop=loop), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connections, tasks
    finally:
        for writer in _WRITERS:
            writer.close()
        _WRITERS.clear()
        for connection in list(connections):
            if connection.transport is not None:
                connection.transport.close()
        for task in list(tasks):
            task.cancel()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)


#: Client connections of the running test, closed with its server.
_WRITERS: list[asyncio.StreamWriter] = []


class Client:
    """A minimal HTTP/2 client: frames in, events out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, window: int) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.conn.initiate_connection()
        self.flush()

    @classmethod
    async def connect(cls, port: int, window: int = 65535) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        _WRITERS.append(writer)
        return cls(reader, writer, window)

    def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    def request(self, path: str = "/model/x/converse", body: bytes = b"{}",
                extra: list[tuple[bytes, bytes]] | None = None) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(b":method", b"POST"), (b":path", path.encode()), (b":scheme", b"http"),
                   (b":authority", b"127.0.0.1"), *(extra or [])]
        self.conn.send_headers(stream_id, headers)
        self.conn.send_data(stream_id, body, end_stream=True)
        self.flush()
        return stream_id

    async def events(self) -> list[h2.events.Event]:
        data = await self.reader.read(65536)
        if not data:
            raise ConnectionError("closed")
        # h2 closes the whole connection on a GOAWAY, sent or received; streams still open
        # may finish (RFC 9113 §6.8), so this client reads on (as Node.js does).
        self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        events = self.conn.receive_data(data)
        self.flush()
        return events

    async def until(self, predicate: Callable[[h2.events.Event], bool]) -> list[h2.events.Event]:
        seen: list[h2.events.Event] = []
        while not any(predicate(event) for event in seen):
            seen += await self.events()
        return seen

    async def response(self, stream_id: int) -> tuple[dict[bytes, bytes], bytes]:
        headers: dict[bytes, bytes] = {}
        body = b""
        while True:
            for event in await self.events():
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                    headers = dict(event.headers or [])
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
                    body += event.data or b""
                    self.conn.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
                    self.flush()
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                    return headers, body
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream_id:
                    raise ConnectionResetError(event.error_code)


async def echo(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    names = b",".join(name for name, _ in scope["headers"])
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"x-names", names), (b"connection", b"keep-alive"), (b"x-path", scope["path"].encode())]})
    await send({"type": "http.response.body", "body": body})


@run
async def test_request_reaches_the_app_with_host_from_authority() -> None:
    async with serve(echo) as (port, _, _):
        client = await Client.connect(port)
        stream_id = client.request("/model/a%3Ab/converse", b'{"x": 1}')
        headers, body = await client.response(stream_id)
        assert headers[b":status"] == b"200" and body == b'{"x": 1}'
        assert headers[b"x-names"] == b"host" and headers[b"x-path"] == b"/model/a:b/converse"
        assert b"connection" not in headers  # hop-by-hop headers are not HTTP/2's


@run
async def test_streamed_response_waits_for_the_clients_window() -> None:
    """1 MiB to a client whose window is 16 KiB and which reads nothing: the app's `send`
    blocks once the window is spent, the rest is not queued; it goes on as the client reads."""
    sent: list[int] = []
    blocked = asyncio.Event()

    async def stream(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                     send: Callable[[Any], Awaitable[None]]) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(64):
            task = asyncio.ensure_future(send({"type": "http.response.body", "body": b"x" * 16384, "more_body": True}))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            if not task.done():
                blocked.set()
            await task
            sent.append(16384)
        await send({"type": "http.response.body", "body": b""})

    async with serve(stream) as (port, _, _):
        client = await Client.connect(port, window=16384)
        stream_id = client.request()
        await blocked.wait()
        assert sum(sent) <= 65535  # at most the connection window ahead of the client
        _, body = await client.response(stream_id)
        assert len(body) == 64 * 16384


@run
async def test_reset_stream_is_a_hang_up() -> None:
    """RST_STREAM (a cancelled SDK call) → the app's `receive()` says `http.disconnect`."""
    got: list[str] = []
    started = asyncio.Event()
    done = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                  send: Callable[[Any], Awaitable[None]]) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        started.set()
        got.append((await receive())["type"])
        done.set()

    async with serve(app) as (port, _, _):
        client = await Client.connect(port)
        stream_id = client.request()
        await started.wait()
        client.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        client.flush()
        await done.wait()
        assert got == ["http.disconnect"]


@run
async def test_limits_are_advertised_and_streams_over_the_limit_refused() -> None:
    async with serve(echo) as (port, _, _):
        client = await Client.connect(port)
        events = await client.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        changed = next(e for e in events if isinstance(e, h2.events.RemoteSettingsChanged)).changed_settings
        assert changed[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 4
        assert changed[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE].new_value == SETTINGS.max_header_list_size


@run
async def test_oversized_header_block_closes_the_connection() -> None:
    async with serve(echo) as (port, _, _):
        client = await Client.connect(port)
        await client.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        client.conn.remote_settings.max_header_list_size = 1 << 24  # ignore what the server said
        huge = [(f"x-h{i}".encode(), b"v" * 1000) for i in range(SETTINGS.max_header_list_size // 1000 + 10)]
        client.request(extra=huge)
        with pytest.raises(ConnectionError):
            await client.until(lambda e: False)


@run
async def test_graceful_shutdown_lets_open_streams_finish() -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                   send: Callable[[Any], Awaitable[None]]) -> None:
        await receive()
        started.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    async with serve(slow) as (port, connections, _):
        client = await Client.connect(port)
        stream_id = client.request()
        await started.wait()
        for connection in list(connections):
            connection.shutdown()
        await client.until(lambda e: isinstance(e, h2.events.ConnectionTerminated))
        release.set()
        _, body = await client.response(stream_id)
        assert body == b"done"
        assert await client.reader.read() == b""  # closed once the last stream ended


@run
async def test_client_goaway_lets_open_streams_finish() -> None:
    """The AWS SDK for JavaScript sends GOAWAY right after an event stream's response head,
    then reads the body: the body must still come (h2 alone would refuse to send it)."""
    release = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                  send: Callable[[Any], Awaitable[None]]) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await release.wait()
        await send({"type": "http.response.body", "body": b"body after goaway"})

    async with serve(app) as (port, _, _):
        client = await Client.connect(port)
        stream_id = client.request()
        await client.until(lambda e: isinstance(e, h2.events.ResponseReceived))
        client.conn.close_connection()
        client.flush()
        await asyncio.sleep(0.05)  # let the server take the GOAWAY before the body is sent
        release.set()
        _, body = await client.response(stream_id)
        assert body == b"body after goaway"


@run
async def test_client_goaway_then_more_request_data_in_the_same_read() -> None:
    """A bidirectional stream (InvokeModelWithBidirectionalStream): the AWS SDK for
    JavaScript sends GOAWAY after the response head and keeps sending its events on the
    open stream. GOAWAY and the next DATA frame can arrive in one read; h2 alone closed the
    connection state on the GOAWAY and refused the DATA as a protocol error."""

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                  send: Callable[[Any], Awaitable[None]]) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.body", "body": b"got " + body})

    async with serve(app) as (port, connections, _):
        client = await Client.connect(port)
        stream_id = client.conn.get_next_available_stream_id()
        client.conn.send_headers(stream_id, [(b":method", b"POST"), (b":path", b"/x"), (b":scheme", b"http"),
                                             (b":authority", b"127.0.0.1")])
        client.conn.send_data(stream_id, b"one,")
        client.flush()
        await client.until(lambda e: isinstance(e, h2.events.ResponseReceived))
        client.conn.close_connection()
        client.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN  # as Node.js goes on
        client.conn.send_data(stream_id, b"two", end_stream=True)
        client.flush()  # GOAWAY and DATA in one write
        _, body = await client.response(stream_id)
        assert body == b"got one,two"


@run
async def test_early_answer_stops_the_upload() -> None:
    """An answer before the request body ended (a refused declared length): the response,
    then RST_STREAM NO_ERROR so the client stops sending (RFC 9113 §8.1)."""

    async def refuse(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                     send: Callable[[Any], Awaitable[None]]) -> None:
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"too big"})

    async with serve(refuse) as (port, _, _):
        client = await Client.connect(port)
        stream_id = client.conn.get_next_available_stream_id()
        client.conn.send_headers(stream_id, [(b":method", b"POST"), (b":path", b"/"), (b":scheme", b"http"),
                                             (b":authority", b"x")])
        client.conn.send_data(stream_id, b"x" * 1000)
        client.flush()
        events = await client.until(lambda e: isinstance(e, h2.events.StreamReset))
        assert [type(e).__name__ for e in events if getattr(e, "stream_id", None) == stream_id][-3:] == [
            "DataReceived", "StreamEnded", "StreamReset"]
        reset = next(e for e in events if isinstance(e, h2.events.StreamReset))
        assert reset.error_code == h2.errors.ErrorCodes.NO_ERROR


@run
async def test_a_connection_without_a_request_is_closed_after_the_head_timeout() -> None:
    """The preface, then nothing (an HTTP/2 slow loris): closed after the first-request
    timeout, as HTTP/1.1 after `limits.head_timeout`, not after the idle timeout."""
    settings = H2Settings(max_concurrent_streams=4, max_header_bytes=16384, max_header_count=100,
                          idle_timeout=3600, first_request_timeout=0.2)
    async with serve(echo, settings) as (port, _, _):
        client = await Client.connect(port)
        with pytest.raises(ConnectionError):
            await client.until(lambda e: False)


def test_preface_constant() -> None:
    assert h2.connection.H2Connection(h2.config.H2Configuration(client_side=True)).initiate_connection() is None
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    assert client.data_to_send().startswith(PREFACE)


# --- header blocks in CONTINUATION frames -------------------------------------------------

#: Timers that never fire in a test: a refusal must come from the frames, not a timeout.
PATIENT = H2Settings(max_concurrent_streams=4, max_header_bytes=16384, max_header_count=100, idle_timeout=3600,
                     first_request_timeout=3600)


def _frames(data: bytes) -> list[bytes]:
    """`data` (whole frames) cut into its frames."""
    frames = []
    while data:
        end = 9 + int.from_bytes(data[:3], "big")
        frames.append(data[:end])
        data = data[end:]
    return frames


async def _trickle(client: Client, frames: list[bytes]) -> None:
    """Each frame in two writes (its 9-byte header, then its payload), a pause after each:
    the server reads partial frames and a header block over many reads."""
    for frame in frames:
        for piece in (frame[:9], frame[9:]):
            if piece:
                client.writer.write(piece)
                await client.writer.drain()
                await asyncio.sleep(0.002)


async def _until_closed(client: Client) -> list[h2.events.Event]:
    """The server's events until it closes the connection. Nothing is written meanwhile: a
    write into a closed connection draws a reset, which can drop the GOAWAY before it is read."""
    seen: list[h2.events.Event] = []
    while data := await client.reader.read(65536):
        seen += client.conn.receive_data(data)
    return seen


async def _ready(port: int) -> Client:
    """A client past the SETTINGS exchange (its acknowledgement written: nothing later is)."""
    client = await Client.connect(port)
    await client.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    return client


def _goaway(events: list[h2.events.Event]) -> h2.errors.ErrorCodes | int | None:
    return next((e.error_code for e in events if isinstance(e, h2.events.ConnectionTerminated)), None)


async def headers_app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                      send: Callable[[Any], Awaitable[None]]) -> None:
    """Answers with the request's headers, one `name: value` line each."""
    while (await receive()).get("more_body"):
        pass
    body = b"\n".join(name + b": " + value for name, value in scope["headers"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@run
async def test_a_header_block_continued_and_trickled_is_served() -> None:
    """A request head in HEADERS + CONTINUATION frames (how a client sends a large head, the
    AWS SDK for JavaScript over HTTP/2 among them), each frame trickled in pieces: served whole."""
    sent = [(f"x-large-{i}".encode(), os.urandom(500).hex().encode()) for i in range(40)]
    async with serve(headers_app, PATIENT) as (port, _, _):
        client = await Client.connect(port)
        client.conn.max_outbound_frame_size = 1024  # h2 cuts the block into frames this long
        stream_id = client.conn.get_next_available_stream_id()
        client.conn.send_headers(stream_id, [(b":method", b"POST"), (b":path", b"/model/x/converse"),
                                             (b":scheme", b"http"), (b":authority", b"127.0.0.1"), *sent],
                                 end_stream=True)
        frames = _frames(client.conn.data_to_send())
        kinds = [type(hyperframe.frame.Frame.parse_frame_header(memoryview(f[:9]))[0]).__name__ for f in frames]
        assert kinds[:2] == ["HeadersFrame", "ContinuationFrame"] and set(kinds[1:]) == {"ContinuationFrame"}
        assert len(frames) >= 20  # a long block, within h2's 64-frame allowance
        await _trickle(client, frames)
        headers, body = await client.response(stream_id)
        assert headers[b":status"] == b"200"
        assert body.split(b"\n") == [b"host: 127.0.0.1", *(name + b": " + value for name, value in sent)]


@pytest.mark.parametrize("payload", [0, 100], ids=["empty-frames", "small-frames"])
@run
async def test_a_continuation_flood_is_refused(payload: int) -> None:
    """A header block that never ends, in more frames than h2 keeps (64): a protocol error
    (GOAWAY), the connection closed, no stream started."""
    async with serve(headers_app, PATIENT) as (port, connections, tasks):
        client = await _ready(port)
        frames = [_headers_frame(client, end_headers=False)]
        for _ in range(h2.frame_buffer.CONTINUATION_BACKLOG):  # one frame over, then nothing
            continuation = hyperframe.frame.ContinuationFrame(1)
            continuation.data = b"\x00" * payload
            frames.append(continuation.serialize())
        await _trickle(client, frames)
        events = await _until_closed(client)
        assert _goaway(events) == h2.errors.ErrorCodes.PROTOCOL_ERROR
        assert not tasks and not connections


@run
async def test_a_header_block_over_the_limit_is_refused_before_it_is_all_held() -> None:
    """A header block that goes on in full-size CONTINUATION frames past the advertised header
    list size, never ending: refused (ENHANCE_YOUR_CALM) once it is over, not held until h2's
    64 frames (1 MiB at 16 KiB a frame) are in."""
    async with serve(headers_app, PATIENT) as (port, connections, tasks):
        client = await _ready(port)
        frames = [_headers_frame(client, end_headers=False)]
        for _ in range(PATIENT.max_header_list_size // 16384 + 1):  # just over the limit, then nothing
            continuation = hyperframe.frame.ContinuationFrame(1)
            continuation.data = b"\x00" * 16384
            frames.append(continuation.serialize())
        await _trickle(client, frames)  # and no END_HEADERS: a server waiting for it hangs here
        events = await _until_closed(client)
        assert _goaway(events) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        assert not tasks and not connections


@run
async def test_a_frame_longer_than_the_max_frame_size_is_refused_at_its_header() -> None:
    """A frame header declaring 16 MiB (over SETTINGS_MAX_FRAME_SIZE, 16 KiB): FRAME_SIZE_ERROR
    as soon as its 9 bytes are in. h2 alone checks the length once the whole frame is held."""
    async with serve(headers_app, PATIENT) as (port, connections, tasks):
        client = await _ready(port)
        frame = bytearray(_headers_frame(client, end_headers=True)[:9])
        frame[:3] = (2 ** 24 - 1).to_bytes(3, "big")
        client.writer.write(bytes(frame))  # and nothing more: a server waiting for the payload hangs here
        events = await _until_closed(client)
        assert _goaway(events) == h2.errors.ErrorCodes.FRAME_SIZE_ERROR
        assert not tasks and not connections


@run
async def test_a_header_block_that_never_ends_is_closed_after_the_head_timeout() -> None:
    """HEADERS without END_HEADERS, then nothing: closed after the first-request timeout."""
    settings = H2Settings(max_concurrent_streams=4, max_header_bytes=16384, max_header_count=100,
                          idle_timeout=3600, first_request_timeout=0.2)
    async with serve(headers_app, settings) as (port, connections, tasks):
        client = await _ready(port)
        client.writer.write(_headers_frame(client, end_headers=False))
        await _until_closed(client)
        assert not tasks and not connections


def _headers_frame(client: Client, *, end_headers: bool) -> bytes:
    """A request's HEADERS frame on stream 1, its block encoded by the client's HPACK encoder."""
    frame = hyperframe.frame.HeadersFrame(1)
    frame.data = client.conn.encoder.encode([(b":method", b"POST"), (b":path", b"/model/x/converse"),
                                             (b":scheme", b"http"), (b":authority", b"127.0.0.1")])
    frame.flags.add("END_STREAM")
    if end_headers:
        frame.flags.add("END_HEADERS")
    return frame.serialize()
