"""HTTP/2 to Bedrock for InvokeModelWithBidirectionalStream: one full-duplex exchange
on the sans-IO `h2` library.

Why not httpx[http2], the ecosystem's HTTP/2 client: httpcore (1.0.9, and httpcore2
2.17, as installed) sends a request's whole body before it reads the response head
(`AsyncHTTP2Connection.handle_async_request`: `_send_request_body`, then
`_receive_response`). A bidirectional stream is a conversation: Nova Sonic answers
while the client still speaks, and a client waits for the answer (`completionEnd`)
before it ends its input, so through httpcore both sides would wait on each other for
ever. The proxy's other client (proxy/http1_client.py) speaks HTTP/1.1 only. The
data port's server side is built on `h2` the same way (proxy/h2_server.py).

One connection per exchange: a stream lasts up to 8 minutes (Bedrock's limit), so
pooling would save one TLS handshake per conversation, not per request. Flow control
holds both ways, so nothing is buffered beyond one window: request DATA goes out only
within Bedrock's window (`send` waits for WINDOW_UPDATE), and response DATA is
acknowledged only as the relay takes it (`chunks`).

Errors are the other client's: `UpstreamUnavailable` before the response head,
`UpstreamBroken` after it (a reset stream, a connection lost or refused by GOAWAY).
Silence is one too, as it is for the other client: with a
`read_timeout`, no head or no response DATA for that long fails the exchange the same
way, so a Bedrock that keeps the connection but stops sending holds nobody for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame
from yarl import URL

from proxy.upstream_errors import UpstreamBroken, UpstreamUnavailable

__all__ = ["H2Exchange"]

logger = logging.getLogger(__name__)

#: Response bytes Bedrock may send ahead of the relay, per stream (HTTP/2's default 64 KiB
#: would stall audio output at one window per round trip).
_WINDOW = 1024 * 1024
_READ = 65536


class _Connection(h2.connection.H2Connection):
    """h2's client connection, but Bedrock's GOAWAY (NO_ERROR) lets the stream already open
    finish (RFC 9113 §6.8: a server draining for a deploy), input included; h2 alone would
    refuse to send another byte. As the data port's server side does (proxy/h2_server.py)."""

    def _receive_goaway_frame(self, frame: hyperframe.frame.GoAwayFrame) -> Any:
        result = super()._receive_goaway_frame(frame)
        if frame.error_code == h2.errors.ErrorCodes.NO_ERROR:
            self.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        return result


class H2Exchange:
    """One request on its own HTTP/2 connection: send the body as it comes, read the
    response as it comes, at the same time. End it with `close()`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 read_timeout: float | None = None) -> None:
        #: Seconds of upstream silence (no head, no DATA) before the exchange fails; None: no bound.
        self._read_timeout = read_timeout
        self._reader = reader
        self._writer = writer
        self._conn = _Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self._stream_id = 0
        self._head: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = (
            asyncio.get_running_loop().create_future())
        self._body: asyncio.Queue[tuple[bytes, int] | BaseException | None] = asyncio.Queue()
        self._window = asyncio.Event()
        self._failure: BaseException | None = None
        self._ended = False  # the response's END_STREAM arrived
        self._sent_end = False
        self._pump: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, headers: Mapping[str, str], *, connect_timeout: float,
                   read_timeout: float | None = None, ssl_context: ssl.SSLContext | None = None) -> H2Exchange:
        """Connect to `url`'s host (TLS with ALPN `h2` for https, h2c with prior knowledge
        for http) and send the request head, its body left open."""
        target = URL(url, encoded=True)
        secure = target.scheme == "https"
        context = None
        if secure:
            context = ssl_context or ssl.create_default_context()
            context.set_alpn_protocols(["h2"])
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(
                    target.host, target.port, ssl=context, server_hostname=target.host if secure else None)
        except (OSError, TimeoutError) as exc:
            raise UpstreamUnavailable(timed_out=isinstance(exc, TimeoutError)) from exc
        exchange = cls(reader, writer, read_timeout)
        if secure:
            tls = writer.get_extra_info("ssl_object")
            if tls is None or tls.selected_alpn_protocol() != "h2":
                writer.close()
                raise UpstreamUnavailable(timed_out=False)
        exchange._start(target, headers)
        return exchange

    def _start(self, target: URL, headers: Mapping[str, str]) -> None:
        conn = self._conn
        conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        })
        conn.initiate_connection()
        self._stream_id = conn.get_next_available_stream_id()
        path = target.raw_path + (f"?{target.raw_query_string}" if target.raw_query_string else "")
        authority = headers.get("host") or target.raw_authority
        block = [(b":method", b"POST"), (b":scheme", target.scheme.encode()), (b":authority", authority.encode()),
                 (b":path", path.encode())]
        block += [(name.encode(), value.encode()) for name, value in headers.items() if name != "host"]
        conn.send_headers(self._stream_id, block)
        self._flush()
        self._pump = asyncio.get_running_loop().create_task(self._read_loop())

    async def response(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        """The response's status and headers (raises `UpstreamUnavailable` if none came,
        or none within `read_timeout`)."""
        try:
            async with asyncio.timeout(self._read_timeout):
                return await asyncio.shield(self._head)
        except UpstreamBroken as exc:
            raise UpstreamUnavailable(timed_out=False) from exc
        except TimeoutError as exc:
            self._fail(UpstreamBroken(f"no response head within {self._read_timeout:g} s"))
            raise UpstreamUnavailable(timed_out=True) from exc

    async def send(self, data: bytes) -> None:
        """Request body bytes, within Bedrock's flow-control window (waits for more)."""
        view = memoryview(data)
        while view:
            self._check()
            window = self._conn.local_flow_control_window(self._stream_id)
            if window <= 0:
                self._window.clear()
                await self._window.wait()
                continue
            size = min(window, self._conn.max_outbound_frame_size, len(view))
            try:
                self._conn.send_data(self._stream_id, view[:size].tobytes())
            except h2.exceptions.ProtocolError as exc:  # the stream was reset meanwhile
                raise UpstreamBroken(type(exc).__name__) from exc
            self._flush()
            view = view[size:]
            await self._drain()

    async def end(self) -> None:
        """The request body is complete (END_STREAM)."""
        self._check()
        if not self._sent_end:
            self._sent_end = True
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._conn.end_stream(self._stream_id)
            self._flush()
            await self._drain()

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The response body as it arrives; acknowledged (flow control) as it is taken."""
        while True:
            try:
                async with asyncio.timeout(self._read_timeout):
                    item = await self._body.get()
            except TimeoutError:
                item = UpstreamBroken(f"no data from the upstream for {self._read_timeout:g} s")
                self._fail(item)
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            data, length = item
            if length:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self._conn.acknowledge_received_data(length, self._stream_id)
                self._flush()
            if data:
                yield data

    def close(self) -> None:
        """Done, or abandoned: a stream still open is cancelled (RST_STREAM), so Bedrock stops."""
        if not self._ended or not self._sent_end:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._conn.reset_stream(self._stream_id, h2.errors.ErrorCodes.CANCEL)
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._conn.close_connection()
        self._flush()
        if self._pump is not None:
            self._pump.cancel()
        self._writer.close()

    # The connection's reader ---------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(_READ)
                if not data:
                    raise UpstreamBroken("connection closed")
                try:
                    events = self._conn.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    raise UpstreamBroken(f"HTTP/2 protocol error: {exc}") from exc
                for event in events:
                    self._handle(event)
                self._flush()
                if self._ended:
                    return
        except asyncio.CancelledError:
            raise
        except (OSError, UpstreamBroken) as exc:
            self._fail(exc if isinstance(exc, UpstreamBroken) else UpstreamBroken(type(exc).__name__))

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived) and event.stream_id == self._stream_id:
            headers = [(bytes(name), bytes(value)) for name, value in event.headers or []]
            status = next((int(value) for name, value in headers if name == b":status"), 0)
            if not self._head.done():
                self._head.set_result((status, [(n, v) for n, v in headers if not n.startswith(b":")]))
        elif isinstance(event, h2.events.DataReceived) and event.stream_id == self._stream_id:
            self._body.put_nowait((event.data or b"", event.flow_controlled_length or 0))
        elif isinstance(event, h2.events.StreamEnded) and event.stream_id == self._stream_id:
            self._ended = True
            self._body.put_nowait(None)
            self._window.set()
        elif isinstance(event, h2.events.StreamReset) and event.stream_id == self._stream_id:
            self._fail(UpstreamBroken(f"stream reset ({event.error_code!r})"))
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window.set()
        elif isinstance(event, h2.events.ConnectionTerminated) and not self._ended:
            if event.last_stream_id is None or event.last_stream_id < self._stream_id \
                    or event.error_code != h2.errors.ErrorCodes.NO_ERROR:
                self._fail(UpstreamBroken(f"connection terminated ({event.error_code!r})"))

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None and not self._ended:
            self._failure = exc
            if not self._head.done():
                self._head.set_exception(exc)
                self._head.exception()  # retrieved: no "never retrieved" warning when nobody awaits
            self._body.put_nowait(exc)
        self._window.set()

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            raise UpstreamBroken(type(exc).__name__) from exc
