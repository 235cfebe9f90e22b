"""HTTP/2 on the data port: a small ASGI server protocol on the sans-IO `h2` library.

Why: since 3.798.0 the AWS SDK for JavaScript's Bedrock Runtime client speaks
HTTP/2 only by default (`NodeHttp2Handler`): the connection preface as prior
knowledge on cleartext, ALPN `h2` over TLS (issue #19). uvicorn speaks HTTP/1.1
only. Rather than change the server (Granian, Hypercorn), HTTP/1.1 stays on
uvicorn + httptools and only a connection that opens with the HTTP/2 preface or
negotiates `h2` is handed to this protocol (proxy/protocol_sniff.py).

Measured with `make bench` smoke settings (`--concurrency 1,16 --duration 3`, trust
and sigv4 proxies, the machine shared and loaded), server CPU per Converse:

    HTTP/1.1, before (main)    trust c=1 743 µs  c=16 658 µs   sigv4 c=1 944 µs  c=16 799 µs
    HTTP/1.1, with the sniff   trust c=1 738 µs  c=16 678 µs   sigv4 c=1 880 µs  c=16 803 µs
    HTTP/2 (this module)       trust c=1 1210 µs c=16 987 µs   sigv4 c=1 1386 µs c=16 1232 µs

HTTP/1.1 is unchanged within the noise (the sniff is one comparison on a
connection's first read). HTTP/2 costs ~300–450 µs more per request here: `h2`'s
pure-Python framing and HPACK. Hypercorn is built on the same `h2` and measured ~6×
slower than uvicorn for HTTP/1.1 too (/work/shared/TOOLING.md), so it would cost every
client; Granian (Rust) would likely serve HTTP/2 cheaper but replaces the server whose
head timeout, workers, graceful shutdown and lifespan are built and tested on uvicorn
here — a larger change than this, left for when HTTP/2 traffic dominates.

Each stream is one ASGI `http` call into the same app as HTTP/1.1, so identity,
metering, errors and streaming are the handler's (proxy/forward.py, proxy/relay.py).
What this module owes the handler, as uvicorn does:

* **A hang-up is `http.disconnect`.** A stream the client resets (RST_STREAM, what a
  cancelled SDK call sends) or a connection that goes away ends the stream's
  `receive()` with `http.disconnect`; further `send()`s are dropped.
* **Nothing is buffered whole.** Request DATA is acknowledged (WINDOW_UPDATE) only as
  the app's `receive()` takes it, so a client can be at most one window ahead;
  response DATA is written only within the client's flow-control window and while
  the socket's write buffer is below its high-water mark; `send()` awaits otherwise.
* **Limits as on HTTP/1.1.** SETTINGS_MAX_CONCURRENT_STREAMS
  (`limits.max_concurrent_streams`), SETTINGS_MAX_HEADER_LIST_SIZE sized so the
  handler's own head check (proxy/limits.py, `max_header_bytes`/`max_header_count`)
  is the one that answers with a Bedrock-shaped error; a header block above it is
  refused as its frames arrive, before it is all held (connection error, `proxy.h2_frames.ServerFrameBuffer`),
  as is a frame over SETTINGS_MAX_FRAME_SIZE, at its header. Body size is the handler's check.
* **Graceful shutdown.** `shutdown()` (uvicorn calls it on SIGTERM) sends GOAWAY:
  open streams finish, new ones are refused; the connection closes when the last ends,
  as after a client's GOAWAY: half-closed first (a FIN after the last byte), then read
  and dropped until the client closes or `_LINGER_SECONDS` pass. Closed at once, a
  client's late WINDOW_UPDATE made the kernel reset it and drop the end of the last
  response (`_close`).
  A bidirectional stream is cut `server.stream_drain_timeout` after the signal
  (proxy/stream_drain.py): a conversation would hold the shutdown for up to 8 minutes.
  An idle connection closes after `server.keepalive_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

import h2.config
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

from proxy.h2_frames import ServerConnection, ServerFrameBuffer

__all__ = ["H2Protocol", "H2Settings"]

logger = logging.getLogger(__name__)

ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]

#: Hop-by-hop headers HTTP/2 forbids (RFC 9113 §8.2.2); an app written for HTTP/1.1 may set them.
_CONNECTION_HEADERS = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})


#: Request-body bytes a client may send ahead of the app's `receive()`, per stream and per
#: connection. HTTP/2's default of 64 KiB would cap an upload at 64 KiB per round trip
#: (1.3 MB/s at 50 ms); what is held is still bounded (and counted by proxy/inflight.py).
_STREAM_WINDOW = 1024 * 1024
#: How long a closing connection reads and drops what the client still sends, after its
#: FIN, before it closes anyway (`H2Protocol._close`).
_LINGER_SECONDS = 2.0
_CONNECTION_WINDOW = 4 * 1024 * 1024


class H2Settings:
    """What the data port's HTTP/2 needs from the configuration (proxy/config.py `limits`)."""

    __slots__ = ("first_request_timeout", "idle_timeout", "max_concurrent_streams", "max_header_list_size")

    def __init__(self, *, max_concurrent_streams: int, max_header_bytes: int, max_header_count: int,
                 idle_timeout: float, first_request_timeout: float | None = None) -> None:
        self.max_concurrent_streams = max_concurrent_streams
        # RFC 9113 counts 32 bytes per field on top of name and value; HTTP/1.1's count
        # (proxy/limits.py) adds 4 (": " and CRLF). Four times the HTTP/1.1 limit (64 KiB at
        # least), so a head a little over that limit reaches the handler's check and gets its
        # Bedrock-shaped 400, as on HTTP/1.1; a block beyond is refused as it arrives
        # (`proxy.h2_frames.ServerFrameBuffer`) or by the HPACK decoder (connection error ENHANCE_YOUR_CALM).
        self.max_header_list_size = max(4 * max_header_bytes, 64 * 1024) + 32 * (max_header_count + 1)
        self.idle_timeout = idle_timeout
        #: From the connection's opening to its first complete request head (HTTP/1.1's
        #: `limits.head_timeout`): a client that sends the preface, then nothing or a
        #: header block that never ends, is closed then, not after the idle timeout.
        self.first_request_timeout = idle_timeout if first_request_timeout is None else first_request_timeout


class _Stream:
    """One request/response exchange: its body queue, its flow-control wake-ups."""

    __slots__ = ("body", "closed", "end_delivered", "ended", "has_data", "response_complete", "response_started",
                 "stream_id", "task", "window_open")

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.body: list[tuple[bytes, int]] = []  # (data, flow-controlled length) not yet received
        self.ended = False  # the client's END_STREAM arrived
        self.end_delivered = False  # ... and receive() said `more_body: False`
        self.closed = False  # reset, or the connection went away
        self.response_started = False
        self.response_complete = False
        self.has_data = asyncio.Event()
        self.window_open = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class H2Protocol(asyncio.Protocol):
    """An HTTP/2 server connection running `app` per stream.

    `connections` and `tasks` are uvicorn's server state sets, so its shutdown waits for
    this connection and its streams as for an HTTP/1.1 one."""

    def __init__(self, app: ASGIApp, settings: H2Settings, *, connections: set[Any], tasks: set[asyncio.Task[None]],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.settings = settings
        self.connections = connections
        self.tasks = tasks
        self.loop = loop
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.conn = ServerConnection(config=config)
        self.conn.incoming_buffer = ServerFrameBuffer(settings.max_header_list_size)
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_list_size,
        })
        self.conn.max_inbound_frame_size = self.conn.local_settings.max_frame_size
        self.streams: dict[int, _Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.scheme = "http"
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self._write_open = asyncio.Event()
        self._write_open.set()
        self._closing = False
        #: Half-closed (`_close`): nothing more is written, what arrives is dropped.
        self._lingering = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport = cast(asyncio.Transport, transport)
        self.connections.add(self)
        self.scheme = "https" if transport.get_extra_info("sslcontext") is not None else "http"
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(_CONNECTION_WINDOW - 65535)
        # The decoder refuses a header block above the advertised size (h2 leaves it at 64 KiB).
        self.conn.decoder.max_header_list_size = self.settings.max_header_list_size
        self._flush()
        self._arm_idle_timer(self.settings.first_request_timeout)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the client's late WINDOW_UPDATEs and PINGs: read, so the close is not a reset
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            logger.info("HTTP/2 protocol error from a client, connection closed: %s", exc)
            self._flush()
            self._close()
            return
        for event in events:
            self._handle(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._cancel_idle_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        for stream in self.streams.values():
            self._close_stream(stream)
        self.streams.clear()
        self._write_open.set()

    def pause_writing(self) -> None:
        self._write_open.clear()

    def resume_writing(self) -> None:
        self._write_open.set()

    # uvicorn's server calls this on SIGTERM/SIGINT ---------------------------------------

    def shutdown(self) -> None:
        """GOAWAY: open streams finish, the client opens new ones elsewhere."""
        if self._closing or not self._writable():
            return
        self._closing = True
        self._goaway()
        if not self.streams:
            self._close(linger=True)

    # HTTP/2 events -------------------------------------------------------------------

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id) if event.stream_id is not None else None
            if stream is None or stream.closed:
                self._ack(event.flow_controlled_length, event.stream_id)
                return
            stream.body.append((event.data or b"", event.flow_controlled_length or 0))
            if event.stream_ended is not None:
                stream.ended = True
            stream.has_data.set()
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.ended = True
                stream.has_data.set()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id or 0, None)
            if stream is not None:
                self._close_stream(stream)
                self._stream_done()
        elif isinstance(event, h2.events.WindowUpdated):
            if not event.stream_id:
                for stream in self.streams.values():
                    stream.window_open.set()
            elif (stream := self.streams.get(event.stream_id)) is not None:
                stream.window_open.set()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for stream in self.streams.values():
                stream.window_open.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # The client's GOAWAY: it opens no new stream, but those open still finish
            # (RFC 9113 §6.8; the AWS SDK for JavaScript sends it right after the response
            # head of an event stream, then reads the body). `ServerConnection` kept h2's state open.
            self._closing = True
            if event.error_code != h2.errors.ErrorCodes.NO_ERROR:
                self._close()
            elif not self.streams:
                self._close(linger=True)

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id or 0
        if self._closing:
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        pseudo: dict[bytes, bytes] = {}
        headers: list[tuple[bytes, bytes]] = []
        for name, value in event.headers or []:
            name_b = name if isinstance(name, bytes) else name.encode()
            value_b = value if isinstance(value, bytes) else value.encode()
            if name_b.startswith(b":"):
                pseudo[name_b] = value_b
            else:
                headers.append((name_b, value_b))
        if b":authority" in pseudo and not any(name == b"host" for name, _ in headers):
            # HTTP/2 carries the host as :authority; SigV4 signs it as `host` (RFC 9113 §8.3.1).
            headers.insert(0, (b"host", pseudo[b":authority"]))
        raw_path = pseudo.get(b":path", b"/")
        path, _, query = raw_path.partition(b"?")
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "2",
            "method": pseudo.get(b":method", b"GET").decode("latin-1"),
            "scheme": self.scheme,
            "path": _unquote(path),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "server": self.server,
            "client": self.client,
            "extensions": {},
        }
        stream = _Stream(stream_id)
        if event.stream_ended is not None:
            stream.ended = True
        self.streams[stream_id] = stream
        self._cancel_idle_timer()
        task = self.loop.create_task(self._run(stream, scope))
        stream.task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # One stream's ASGI call ----------------------------------------------------------

    async def _run(self, stream: _Stream, scope: dict[str, Any]) -> None:
        async def receive() -> dict[str, Any]:
            return await self._receive(stream)

        async def send(message: Any) -> None:
            await self._send(stream, message)

        try:
            await self.app(scope, receive, send)
        except Exception:
            logger.exception("unexpected error in an HTTP/2 stream")
            if not stream.response_started and not stream.closed:
                await self._send(stream, {"type": "http.response.start", "status": 500,
                                          "headers": [(b"content-type", b"text/plain")]})
                await self._send(stream, {"type": "http.response.body", "body": b"Internal Server Error"})
            elif not stream.response_complete:
                self._reset(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
        else:
            if not stream.response_complete and not stream.closed:
                # The app returned without finishing its response (a cut it could not frame).
                self._reset(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
        finally:
            if self.streams.pop(stream.stream_id, None) is not None:
                if not stream.ended and not stream.closed:
                    # Answered before the request body ended (refused by its declared length,
                    # say): the client would wait for window to send the rest. Ask it to stop
                    # (RFC 9113 §8.1), after the complete response.
                    self._reset(stream, h2.errors.ErrorCodes.NO_ERROR)
                self._stream_done()

    async def _receive(self, stream: _Stream) -> dict[str, Any]:
        while True:
            if stream.closed or stream.response_complete:
                return {"type": "http.disconnect"}
            if stream.body:
                data = b"".join(chunk for chunk, _ in stream.body)
                self._ack(sum(length for _, length in stream.body), stream.stream_id)
                stream.body.clear()
                self._flush()
                stream.end_delivered = stream.ended
                return {"type": "http.request", "body": data, "more_body": not stream.ended}
            if stream.ended and not stream.end_delivered:
                # An empty end (END_STREAM on HEADERS, or an empty DATA frame).
                stream.end_delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            stream.has_data.clear()
            await stream.has_data.wait()

    async def _send(self, stream: _Stream, message: Any) -> None:
        if stream.closed or not self._writable():
            return
        kind = message["type"]
        if kind == "http.response.start":
            if stream.response_started:
                raise RuntimeError("http.response.start sent twice")
            stream.response_started = True
            headers = [(b":status", str(message["status"]).encode())]
            headers += [(bytes(name).lower(), bytes(value)) for name, value in message.get("headers", [])
                        if bytes(name).lower() not in _CONNECTION_HEADERS]
            self.conn.send_headers(stream.stream_id, headers)
            self._flush()
        elif kind == "http.response.body":
            if not stream.response_started or stream.response_complete:
                raise RuntimeError("http.response.body outside a response")
            await self._send_data(stream, message.get("body", b""))
            if not message.get("more_body", False) and not stream.closed:
                stream.response_complete = True
                self.conn.end_stream(stream.stream_id)
                self._flush()
                stream.has_data.set()  # a receive() waiting for a hang-up returns

    async def _send_data(self, stream: _Stream, data: bytes) -> None:
        view = memoryview(data)
        while view and not stream.closed:
            await self._write_open.wait()
            if stream.closed:
                return
            window = self.conn.local_flow_control_window(stream.stream_id)
            if window <= 0:
                stream.window_open.clear()
                await stream.window_open.wait()
                continue
            size = min(window, self.conn.max_outbound_frame_size, len(view))
            self.conn.send_data(stream.stream_id, view[:size].tobytes())
            self._flush()
            view = view[size:]

    # Helpers --------------------------------------------------------------------------

    def _ack(self, length: int | None, stream_id: int | None) -> None:
        if not length:
            return
        try:
            self.conn.acknowledge_received_data(length, stream_id or 0)
        except h2.exceptions.StreamClosedError:
            self.conn.increment_flow_control_window(length)  # the connection's share still counts

    def _reset(self, stream: _Stream, code: h2.errors.ErrorCodes) -> None:
        try:
            self.conn.reset_stream(stream.stream_id, code)
        except h2.exceptions.ProtocolError:
            pass  # already closed, or the connection is
        self._flush()
        self._close_stream(stream)

    @staticmethod
    def _close_stream(stream: _Stream) -> None:
        stream.closed = True
        stream.has_data.set()
        stream.window_open.set()

    def _stream_done(self) -> None:
        if self.streams:
            return
        if self._closing:
            self._close(linger=True)
        else:
            self._arm_idle_timer()

    def _writable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing() and not self._lingering

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self._writable():
            self.transport.write(data)  # type: ignore[union-attr]

    def _close(self, *, linger: bool = False) -> None:
        """Close the connection. `linger`, once responses were sent (a graceful end): close
        once all that was written is sent, without a reset — a FIN after the last byte
        (`write_eof`), then what the client still sends is read and dropped until it
        closes too, or `_LINGER_SECONDS` after. Closed at once, a socket with a client
        byte unread (a WINDOW_UPDATE for the last DATA, a PING: a client reading a
        response sends them all along) is reset by the kernel, and a reset drops what the
        kernel had not sent yet: the end of the last response, on any network slower than
        the client's window. A protocol error or a timeout closes at once."""
        self._cancel_idle_timer()
        if not self._writable():  # closed, closing, or half-closed already
            return
        transport = cast(asyncio.Transport, self.transport)
        if not linger or not transport.can_write_eof():  # TLS: its close_notify exchange reads on
            transport.close()
            return
        self._lingering = True
        transport.write_eof()
        self._linger_timer = self.loop.call_later(_LINGER_SECONDS, transport.close)

    def _arm_idle_timer(self, seconds: float | None = None) -> None:
        self._cancel_idle_timer()
        self._idle_timer = self.loop.call_later(self.settings.idle_timeout if seconds is None else seconds,
                                                self._idle)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle(self) -> None:
        self._idle_timer = None
        if not self.streams and self._writable():
            self._goaway()
            self._close()

    def _goaway(self) -> None:
        """A GOAWAY written beside h2's state machine: its own `close_connection()` moves the
        connection to CLOSED, where the streams still open could not send their last bytes."""
        frame = hyperframe.frame.GoAwayFrame(0)
        frame.last_stream_id = self.conn.highest_inbound_stream_id
        frame.error_code = h2.errors.ErrorCodes.NO_ERROR
        self._flush()
        if self._writable():
            self.transport.write(frame.serialize())  # type: ignore[union-attr]


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None


def _unquote(path: bytes) -> str:
    from urllib.parse import unquote

    return unquote(path.decode("latin-1"))
