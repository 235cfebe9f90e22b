"""One data port for HTTP/1.1 and HTTP/2: the protocol is chosen per connection.

uvicorn's httptools protocol (with the head timeout, proxy/head_timeout.py) keeps
every HTTP/1.1 connection; a connection is handed to the HTTP/2 protocol
(proxy/h2_server.py) when

* over TLS, ALPN negotiated `h2` (the data port's TLS context offers `h2` and
  `http/1.1`, `offer_h2_over_tls`), or
* its first bytes are the HTTP/2 connection preface `PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n`
  (h2c with prior knowledge, what the AWS SDK for JavaScript sends to an http://
  endpoint; also a TLS client that sends it without ALPN).

Why a sniff rather than another server: HTTP/1.1 keeps uvicorn + httptools (the
fastest measured here, bench/RESULTS.md); the sniff costs one comparison on each
connection's first read, nothing afterwards. The head timeout applies to the
preface as to a head: a connection that sends nothing is closed as before.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import ClassVar

from proxy.h2_server import H2Protocol, H2Settings
from proxy.head_timeout import HeadTimeoutProtocol
from proxy.head_with_body import HeadWithBody

__all__ = ["PREFACE", "SniffingProtocol", "data_port_protocol", "offer_h2_over_tls"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class SniffingProtocol(HeadTimeoutProtocol):
    """HTTP/1.1 as uvicorn serves it, unless the connection turns out to be HTTP/2; a
    response's head written with its body (proxy/head_with_body.py)."""

    h2_settings: ClassVar[H2Settings]

    #: Bytes of a possible preface seen so far; None once the protocol is decided.
    _sniffed: bytes | None = b""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        tls = transport.get_extra_info("ssl_object")
        if tls is not None and tls.selected_alpn_protocol() == "h2":
            self._to_h2(b"")

    def data_received(self, data: bytes) -> None:
        if self._sniffed is None:
            super().data_received(data)
            return
        seen = self._sniffed + data
        if PREFACE.startswith(seen[: len(PREFACE)]):
            if len(seen) >= len(PREFACE):
                self._to_h2(seen)
            else:
                self._sniffed = seen  # the preface split across reads: wait for the rest
            return
        self._sniffed = None
        super().data_received(seen)

    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:  # a request's cycle (not an upgrade): its head goes with its body
            self.cycle.transport = HeadWithBody(self.transport, self.cycle, self.loop)  # type: ignore[assignment]

    def _to_h2(self, data: bytes) -> None:
        """Hand the transport to an HTTP/2 protocol, with what was read of it."""
        self._sniffed = None
        self._stop_head_timer()
        self._unset_keepalive_if_required()
        self.connections.discard(self)
        h2 = H2Protocol(self.app, self.h2_settings, connections=self.connections, tasks=self.tasks, loop=self.loop)
        self.transport.set_protocol(h2)
        h2.connection_made(self.transport)
        if data:
            h2.data_received(data)


def data_port_protocol(head_timeout: float, settings: H2Settings) -> type[SniffingProtocol]:
    """The protocol class for the data port's uvicorn `http=`."""
    return type("SniffingProtocol", (SniffingProtocol,), {"head_timeout": head_timeout, "h2_settings": settings})


def offer_h2_over_tls(context: ssl.SSLContext | None) -> None:
    """ALPN on the data port's TLS: `h2` first (what HTTP/2 clients ask for), then `http/1.1`."""
    if context is not None:
        context.set_alpn_protocols(["h2", "http/1.1"])
