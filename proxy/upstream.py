"""The way to Bedrock: the proxy's own credentials, SigV4 re-signing, one pooled client.

Credentials come from the standard AWS chain via aiobotocore (environment,
shared profile, web identity / IRSA, container and instance roles) and are
refreshed without blocking the event loop. Signing is botocore's `SigV4Auth`
with signing name `bedrock`.

The HTTP client is the proxy's own small HTTP/1.1 client: asyncio protocols around
httptools' (llhttp's) response parser, as uvicorn's server side is
(proxy/http1_client.py, one connection; proxy/http1_pool.py, the pool). The proxy
began on httpx; `make bench` measured httpx/httpcore 1.0 at 1.5–5.6 ms of CPU per
request on this path (its pool probes every pooled socket on every request), against
~0.25 ms for aiohttp (bench/RESULTS.md), which replaced it. Then a py-spy profile of
`costkeeper serve` at c=16 Converse put aiohttp at ~24 % of the proxy's CPU, more than
any other component (issue #20), for features the proxy never used (cookie jar,
redirects, proxies, automatic headers, decompression). Its replacement keeps what the
proxy needs — pooling bounded by `upstream.max_connections`, the pool wait, connect
and read timeouts, TLS with the system trust store, flow control — and took the CPU per
request served at c=16 (Converse, trust) from 579 to 435 µs; `bench.inproc`: Converse
509 → 357 µs, InvokeModelWithResponseStream 719 → 579 µs (medians of three interleaved
runs, 2026-12-06). The path is sent exactly as it was signed (`%3A` and `%2F` stay),
the head carries the signed headers and `Content-Length` and nothing else, bodies pass
through compressed or not, and there is no cookie jar: what Bedrock receives is what
was signed, and one client's `Set-Cookie` never reaches another's requests.

A pooled connection the upstream has closed (it answered, then dropped the
keep-alive connection without `Connection: close`) is found out only when the
next request is written into it. Such a request, failed on a *reused* connection
before any byte of an answer, is sent once more on a fresh connection, as Go's
net/http and urllib3 do: Bedrock never saw it, the body is bytes in hand, and
nothing has reached the client (aiohttp, before, retried this itself only for
idempotent methods, and every Bedrock call is a POST). A timeout, a failure on a fresh
connection or after part of an answer is never sent again (Bedrock may be
generating). Every failure is logged with its cause; retries are counted
(`costkeeper_upstream_retries_total`).
"""

from __future__ import annotations

import errno
import functools
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import botocore.auth
from aiobotocore.session import get_session
from botocore.auth import SIGNED_HEADERS_BLACKLIST
from botocore.awsrequest import AWSRequest
from botocore.exceptions import NoCredentialsError
from yarl import URL

from proxy.config import Config
from proxy.event_signing import ChainSigner, seed_signature
from proxy.h2_upstream import H2Exchange
from proxy.http1_client import (
    ClientError,
    Connection,
    ConnectionBrokenError,
    ServerDisconnectedError,
    headers_of,
    request_head,
)
from proxy.http1_pool import Origin, Pool
from proxy.kept_credentials import KeptFrozenCredentials
from proxy.sigv4 import STREAMING_PAYLOAD
from proxy.sigv4_signer import SIGNING_SERVICE, KeptKeySigV4Auth, PlainRequest, SignedHeaders
from proxy.upstream_errors import UpstreamBroken, UpstreamUnavailable

__all__ = ["NoUpstreamCredentials", "Upstream", "UpstreamBroken", "UpstreamResponse", "UpstreamUnavailable", "sign"]

logger = logging.getLogger(__name__)

#: botocore's `SIGNED_HEADERS_BLACKLIST` (a list), as a set.
_UNSIGNED = frozenset(SIGNED_HEADERS_BLACKLIST)
#: What a peer that closed or reset a connection looks like when a request is written into it.
_STALE_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})

class NoUpstreamCredentials(RuntimeError):
    """The AWS credential chain found nothing for the proxy to sign with."""


class UpstreamResponse:
    """An open upstream response: status and headers now, the body as it arrives.

    The caller must end it with `release()` (read to the end; the connection goes
    back to the pool) or `close()` (abandoned; the connection is dropped, which is
    how a client hang-up reaches Bedrock). Either may be called again, or after the other.
    """

    __slots__ = ("_connection", "headers", "raw_headers", "status")

    def __init__(self, connection: Connection) -> None:
        self._connection: Connection | None = connection
        self.status: int = connection.status
        #: As received, for relaying: [(name, value), ...] in bytes.
        self.raw_headers: tuple[tuple[bytes, bytes], ...] = tuple(connection.raw_headers)
        #: Case-insensitive lookups.
        self.headers: Mapping[str, str] = headers_of(connection.raw_headers)

    @property
    def body_in_hand(self) -> bool:
        """The whole body has arrived: reading it waits on nothing."""
        return self._connection is None or self._connection.body_in_hand

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The body, chunk by chunk as the socket delivers it (never buffered whole). A
        generator: a caller that stops early closes it (`aclose`), or asyncio must."""
        connection = self._connection
        if connection is None:
            return
        try:
            while chunk := await connection.next_chunk():
                yield chunk
        except ClientError as exc:
            raise self._broken(exc) from exc

    def in_hand(self) -> bytes:
        """The whole body, when it is in hand (`body_in_hand`): no generator to drive or close."""
        assert self.body_in_hand
        connection = self._connection
        return b"" if connection is None else connection.take()

    async def read(self) -> bytes:
        """The whole body (only for JSON bodies that must be translated whole)."""
        return b"".join([chunk async for chunk in self.chunks()])

    def _broken(self, exc: BaseException) -> UpstreamBroken:
        logger.warning("upstream response %s ended before its body did (%s)",
                       self.headers.get("x-amzn-requestid", "-"), _cause(exc))
        return UpstreamBroken(_cause(exc))

    def release(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.release()

    def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()

    def __del__(self) -> None:
        # A response a bug left open would hold its place in the pool for good (aiohttp's
        # responses close themselves the same way).
        if self._connection is not None:
            self.close()


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """One Region's endpoint, everything a request to it needs, worked out once."""

    #: The base URL, as signed (a request's path and query follow it).
    url: str
    #: The `Host` header: the URL's authority as written (a default port left out).
    host: str
    #: The Region its requests are signed for.
    region: str
    #: Where the pool sends them.
    origin: Origin

    @classmethod
    def of(cls, url: str, region: str) -> _Endpoint:
        return cls(url, URL(url).raw_authority, region, Origin.of(url))


def _stale(exc: ClientError) -> bool:
    """Did this failure happen on a connection the upstream had closed, before any byte
    of an answer? (Only asked about reused connections.)"""
    if exc.answered:
        return False
    if isinstance(exc, ServerDisconnectedError):
        return True
    return isinstance(exc, ConnectionBrokenError) and exc.errno in _STALE_ERRNOS


def _cause(exc: BaseException) -> str:
    """A client failure, for a log line: its type and message (no request headers)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


#: The clock `X-Amz-Date` is read from: seconds since the epoch, as botocore's
#: `datetime.now(timezone.utc)` reads it (a module attribute, so tests can freeze it).
_clock: Callable[[], float] = time.time
#: (second, `X-Amz-Date` for it): botocore's clock call and `strftime` cost more than a
#: tenth of a signature; the string changes once a second.
_stamp: tuple[int, str] = (-1, "")


def _amz_date() -> str:
    """Now, in botocore's `SIGV4_TIMESTAMP` format (`%Y%m%dT%H%M%SZ`, UTC)."""
    global _stamp  # noqa: PLW0603 (one entry, replaced whole)
    second = int(_clock())
    if _stamp[0] != second:
        _stamp = (second, time.strftime(botocore.auth.SIGV4_TIMESTAMP, time.gmtime(second)))
    return _stamp[1]


class _Signer(KeptKeySigV4Auth):
    """botocore's SigV4 over headers kept in a plain dict beside the request
    (`PlainRequest.given`), one signer per credentials and Region (`_signer`).

    botocore keeps a request's headers in an `HTTPHeaders` (an `email.message.Message`)
    and reads them back twice per signature; most of a signature's cost was that
    (bench/micro.py). The request given to botocore carries only what botocore sets
    itself (`X-Amz-Date`, a session token, `Authorization`); the headers to sign are
    chosen as botocore chooses them — every header but its `SIGNED_HEADERS_BLACKLIST`.
    """

    def add_auth(self, request: AWSRequest) -> None:
        """botocore's `add_auth`, step for step, each step botocore's own; its timestamp is
        formatted once a second (`_amz_date`) and its debug logging of the strings signed
        is left out."""
        if self.credentials is None:
            raise NoCredentialsError()
        request.context["timestamp"] = _amz_date()
        self._modify_request_before_signing(request)
        string_to_sign = self.string_to_sign(request, self.canonical_request(request))
        self._inject_signature_to_request(request, self.signature(string_to_sign, request))

    def headers_to_sign(self, request: PlainRequest) -> SignedHeaders:
        selected = request.to_sign
        if selected is None:  # asked twice per signature, after botocore set its own
            # `given`'s names are lower-case (`sign`'s contract) and one of each: only botocore's are lower-cased.
            # A comprehension: a generator of pairs was twice its cost (issue #20).
            selected = request.to_sign = SignedHeaders(
                {name: [value] for name, value in request.given.items() if name not in _UNSIGNED})
            for name, value in request.headers.items():
                lower = name.lower()
                if lower not in _UNSIGNED:
                    selected.setdefault(lower, []).append(value)
        return selected


@functools.lru_cache(maxsize=64)
def _signer(credentials: Any, region: str) -> _Signer:
    """The signer of these credentials for this Region: aiobotocore's frozen credentials are
    a tuple of their values (a refreshed set is another signer), others are kept by identity."""
    return _Signer(credentials, SIGNING_SERVICE, region)


def sign(credentials: Any, region: str, method: str, url: str, headers: dict[str, str], body: bytes,
         payload_hash: str | None = None, body_sha256: str | None = None) -> dict[str, str]:
    """`headers` (lower-case names, `host` included, no client credentials) plus
    botocore's SigV4: `X-Amz-Date`, `Authorization`, a session token if any.
    `payload_hash`: declared and signed instead of the body's (a signed event stream);
    `body_sha256`: the body's hash, known already (its verification computed it), signed
    as botocore would sign the body's, and declared in no header."""
    request = PlainRequest(method, url, body, given=headers, body_sha256=body_sha256)
    if payload_hash is not None:
        request.headers["X-Amz-Content-SHA256"] = payload_hash
    _signer(credentials, region).add_auth(request)
    return {**headers, **request.headers}


class Upstream:
    """Sends to the home Region's endpoint, or, with `upstream.regions`, to the endpoint
    of the Region the client signed for, re-signed for that Region."""

    def __init__(self, config: Config, on_retry: Callable[[], None] | None = None) -> None:
        #: Called for each request sent again on a fresh connection (a metric).
        self._on_retry = on_retry or (lambda: None)
        self._home = _Endpoint.of(config.upstream_url, config.region)
        #: Each allowed Region's endpoint (empty: everything goes home).
        self._regional = {region: _Endpoint.of(config.upstream_url_for(region), region)
                          for region in config.upstream.regions}
        up = config.upstream
        self._connect_timeout = up.pool_timeout + up.connect_timeout
        #: A bidirectional stream's upstream silence, as for any response (`upstream.read_timeout`).
        self._read_timeout = up.read_timeout
        self._settings = up
        self._pool: Pool | None = None
        self._credentials: Any = None

    @property
    def ready(self) -> bool:
        return self._pool is not None and self._credentials is not None

    async def start(self) -> None:
        self._credentials = KeptFrozenCredentials.around(await get_session().get_credentials())
        if self._credentials is None:
            raise NoUpstreamCredentials(
                "no AWS credentials found for the upstream (environment, shared profile, "
                "web identity, container or instance role)"
            )
        # No cookie jar, no redirects, no proxy from the environment: cookies cross per
        # request, both ways, unchanged; one client's `Set-Cookie` never reaches another's.
        up = self._settings
        self._pool = Pool(max_connections=up.max_connections, pool_timeout=up.pool_timeout,
                          connect_timeout=up.connect_timeout, read_timeout=up.read_timeout,
                          keepalive_timeout=up.keepalive_timeout)
        logger.info("upstream %s, region %s, credentials via %s", self._home.url, self._home.region,
                    self._credentials.method)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    def _target(self, raw_path: str, raw_query: str, headers: dict[str, str],
                region: str | None) -> tuple[_Endpoint, str]:
        """(endpoint, path and query): the home Region's, or the client's when it is an
        allowed one; `headers` gets that endpoint's `host`."""
        endpoint = self._regional.get(region, self._home) if region is not None else self._home
        headers["host"] = endpoint.host
        return endpoint, raw_path + (f"?{raw_query}" if raw_query else "")

    async def open_stream(
        self, raw_path: str, raw_query: str, headers: dict[str, str], region: str | None = None,
    ) -> tuple[H2Exchange, ChainSigner]:
        """A signed event stream's request (InvokeModelWithBidirectionalStream) over HTTP/2,
        its head sent and signed for `STREAMING_PAYLOAD`, and the signer of its events,
        chained on that head's signature (proxy/event_signing.py)."""
        assert self._credentials is not None, "Upstream.start() was not awaited"
        endpoint, path = self._target(raw_path, raw_query, headers, region)
        url, signing_region = endpoint.url + path, endpoint.region
        headers["content-type"] = "application/vnd.amazon.eventstream"
        frozen = await self._credentials.get_frozen_credentials()
        signed = sign(frozen, signing_region, "POST", url, headers, b"", payload_hash=STREAMING_PAYLOAD)
        exchange = await H2Exchange.open(url, signed, connect_timeout=self._connect_timeout,
                                         read_timeout=self._read_timeout)
        return exchange, ChainSigner(frozen, signing_region, SIGNING_SERVICE, seed_signature(signed["Authorization"]))

    async def send(
        self, method: str, raw_path: str, raw_query: str, headers: dict[str, str], body: bytes,
        region: str | None = None, body_sha256: str | None = None,
    ) -> UpstreamResponse:
        """Sign and send; the response is open and streaming (the caller ends it).

        `region`: the Region the client signed for; used when it is an allowed one.
        `body_sha256`: `body`'s SHA-256 (hex), if its verification computed it."""
        pool = self._pool
        assert pool is not None, "Upstream.start() was not awaited"
        endpoint, path = self._target(raw_path, raw_query, headers, region)
        host, origin = endpoint.host, endpoint.origin
        frozen = await self._credentials.get_frozen_credentials()
        signed = sign(frozen, endpoint.region, method, endpoint.url + path, headers, body, body_sha256=body_sha256)
        head = request_head(method, origin.prefix + path, signed, len(body))
        head_only = method == "HEAD"
        try:
            try:
                connection = await pool.request(origin, head, body, head_only=head_only)
            except ClientError as exc:
                if not (exc.reused and _stale(exc)):
                    raise
                logger.warning("upstream closed a reused connection before answering %s (%s): sending it "
                               "again on a fresh connection", host, _cause(exc))
                self._on_retry()
                connection = await pool.request(origin, head, body, head_only=head_only, fresh=True)
        except TimeoutError as exc:
            logger.warning("upstream %s timed out before answering (%s)", host, _cause(exc))
            raise UpstreamUnavailable(timed_out=True) from exc
        except ClientError as exc:
            logger.warning("upstream %s could not be reached (%s)", host, _cause(exc))
            raise UpstreamUnavailable(timed_out=False) from exc
        return UpstreamResponse(connection)
