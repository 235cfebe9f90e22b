"""InvokeModelWithBidirectionalStream through the proxy: both directions relayed frame
by frame over HTTP/2, each input event re-signed, usage metered from the output.

    client ──HTTP/2──▶ proxy ──HTTP/2 (proxy/h2_upstream.py)──▶ Bedrock
      signed envelopes:  verified with the client's issued secret,
                         re-signed with the proxy's credentials (proxy/event_signing.py)
      output frames:     relayed whole as they come, usage events read on the side
                         (adapters/bidi.py)

Two tasks per stream, one per direction, so neither waits for the other: the input
pump takes the client's request body as the server hands it over (HTTP/2 flow control
holds the client back meanwhile) and sends each message upstream within Bedrock's
window; the output loop relays what Bedrock sends, whole frames only. Nothing is held
beyond one frame, and an input frame larger than `limits.max_body_bytes` is refused
while it arrives (a stream has no length to check up front).

* **Admission at the start.** The caller is identified from the head (signed for a
  streaming payload), the operation must be allowed, and the plan (its model, a fallback
  within a chain of bidirectional models, the quota held) is made before anything is sent.
* **HTTP/1.1 is refused** before any of that costs an upstream call: Bedrock serves the
  operation over HTTP/2 only (`adapters.bidi.HTTP2_ONLY`).
* **Usage as it goes.** Each `usageEvent` total is checkpointed (the first at once,
  then at most every `metering.checkpoint_interval` seconds, metering/checkpoints.py):
  a proxy killed mid-conversation meters the last checkpoint at its next start,
  flagged estimated; the end's event supersedes it.
* **A shutdown** (SIGTERM) lets a stream go on for `server.stream_drain_timeout` seconds
  (proxy/stream_drain.py), then ends it with a `serviceUnavailableException` frame (a
  503 before the head) and meters it, flagged estimated.
* **The end.** Bedrock's END_STREAM ends the client's response and meters the last
  `usageEvent` total, exact. A client that goes away (RST_STREAM, the connection) or
  an upstream that is cut meters what the usage events reported so far, flagged
  estimated (and `hung_up` for the former); a cut ends the client's stream with an
  exception frame. An input event whose signature does not verify ends the exchange:
  a 403 `InvalidSignatureException` if Bedrock has not answered yet, otherwise an
  exception frame, and the upstream stream is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from botocore.eventstream import EventStreamBuffer, EventStreamMessage
from starlette.types import Receive, Scope, Send

from adapters.bidi import HTTP2_ONLY, BidiUsageWatcher
from adapters.eventstream import FrameSplitter, encode_message
from adapters.usage import Usage
from metering.tags import Tags
from proxy.admission import Admission, Plan
from proxy.errors import (
    BedrockError,
    InvalidSignatureException,
    ServiceUnavailableException,
    ValidationException,
    new_request_id,
    send_error,
    stream_error_frame,
)
from proxy.event_signing import ChainSigner, ChainVerifier, EventChainError, envelopes
from proxy.h2_upstream import H2Exchange
from proxy.headers import request_headers_for_upstream, response_headers_for_client
from proxy.identity import Caller, Identified
from proxy.routing import Route
from proxy.stream_drain import StreamDrain
from proxy.upstream import Upstream
from proxy.upstream_errors import UpstreamBroken, UpstreamUnavailable, unsent

__all__ = ["BidiRelay", "Checkpoint", "Meter", "first_or_none"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_TOO_LARGE = "An input event exceeds the limit of {} bytes."
_SHUTTING_DOWN = "The proxy is shutting down: open the stream again to continue the conversation."
#: A status for the usage event of a client that left before any response head.
_CLIENT_CLOSED = 499

#: (route, caller, plan, status, request id, usage, started, first byte, hung up): records
#: the usage event and settles the plan (ProxyHandler's metering).
Meter = Callable[[Route, Caller, Plan, int, "str | None", Usage, float, "float | None", bool], None]
#: (route, caller, plan, request id, usage so far, started, first byte): an open stream's
#: usage checkpoint (ProxyHandler's).
Checkpoint = Callable[[Route, Caller, Plan, str, Usage, float, "float | None"], None]


class BidiRelay:
    def __init__(self, *, admission: Admission, upstream: Upstream, meter: Meter,
                 costkeeper_headers: Callable[[Plan], list[tuple[bytes, bytes]]], max_event_bytes: int,
                 checkpoint: Checkpoint, checkpoint_interval: float, drain: StreamDrain | None = None) -> None:
        #: This process's open streams, cut when a shutdown's bound is reached.
        self._drain = drain or StreamDrain()
        self._checkpoint = checkpoint
        self._checkpoint_interval = checkpoint_interval
        #: The largest input event held while it arrives (`limits.max_body_bytes`): a stream
        #: has no length to check, but each event is held whole until its signature is checked.
        self._max_event_bytes = max_event_bytes
        self._admission = admission
        self._upstream = upstream
        self._meter = meter
        self._costkeeper_headers = costkeeper_headers

    async def serve(self, scope: Scope, receive: Receive, send: Send, route: Route, identified: Identified,
                    raw_path: str, raw_query: str, started: float, *, tags: Tags = ()) -> None:
        """Raise a BedrockError (or AuthRefused) for a refusal before any response; otherwise
        relay the stream to its end and meter it."""
        if scope.get("http_version") != "2":
            raise ValidationException(HTTP2_ONLY)
        caller, verifier = identified.verify_stream()
        self._admission.check_operation(route.operation, caller)
        plan = await self._admission.plan(route, caller, raw_path, b"", None)
        plan.tags = tags  # its `x-costkeeper-tag-*` headers (the body is a stream: no requestMetadata)
        headers = request_headers_for_upstream(scope["headers"])
        headers.pop("content-type", None)  # the upstream's own (an event stream)
        try:
            exchange, signer = await self._upstream.open_stream(plan.raw_path, raw_query, headers, caller.region)
        except BaseException as exc:
            status, raised = unsent(exc)
            self._meter(route, caller, plan, status, None, Usage(), started, None, False)
            if raised is exc:
                raise
            raise raised from None
        stream = _Stream(receive, send, exchange, signer, verifier, self._max_event_bytes)
        stream.checkpoints = _Checkpoints(
            lambda: self._checkpoint(route, caller, plan, stream.request_id or "", stream.usage(estimated=True),
                                     started, stream.first_byte), self._checkpoint_interval)
        self._drain.opened(stream.cut)
        try:
            await stream.run(self._costkeeper_headers(plan))
        finally:
            self._drain.closed(stream.cut)
            stream.checkpoints.close()  # none after the final event
            exchange.close()
            self._meter(route, caller, plan, stream.status, stream.request_id, stream.usage(), started,
                        stream.first_byte, stream.hung_up)


class _Checkpoints:
    """When an open stream's usage is written down: the first usage seen at once, later
    ones at most every `interval` seconds (a timer, so the last change before a quiet
    spell is written too). `write` reads the usage when it runs: always the latest."""

    def __init__(self, write: Callable[[], None], interval: float) -> None:
        self._write = write
        self._interval = interval
        self._last: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def seen(self) -> None:
        """The usage changed."""
        if self._timer is not None:
            return  # written when the timer fires, with this change in it
        loop = asyncio.get_running_loop()
        delay = 0.0 if self._last is None else self._last + self._interval - loop.time()
        if delay <= 0:
            self._now()
        else:
            self._timer = loop.call_later(delay, self._now)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _now(self) -> None:
        self._timer = None
        self._last = asyncio.get_running_loop().time()
        self._write()


@dataclass(slots=True)
class _Outcome:
    """Why the input pump stopped before the stream ended."""

    client_gone: bool = False
    refused: EventChainError | None = None
    #: The proxy is shutting down and the drain's bound is reached.
    shutdown: bool = False


class _Stream:
    """One relayed exchange: its two directions, and what it metered."""

    def __init__(self, receive: Receive, send: Send, exchange: H2Exchange, signer: ChainSigner,
                 verifier: ChainVerifier | None, max_event_bytes: int) -> None:
        self._max_event_bytes = max_event_bytes
        self._receive = receive
        self._send = send
        self._exchange = exchange
        self._signer = signer
        self._verifier = verifier
        self._watcher = BidiUsageWatcher()
        self._outcome = _Outcome()
        self._stopped = asyncio.Event()
        self.status = _CLIENT_CLOSED
        self.request_id: str | None = None
        self.first_byte: float | None = None
        self.hung_up = False
        self._complete = False  # Bedrock ended the stream: its usage is final
        self.checkpoints = _Checkpoints(lambda: None, 0)

    def cut(self) -> None:
        """The proxy is shutting down: end the exchange as the input pump's stop does."""
        self._outcome.shutdown = True
        self._stopped.set()

    def usage(self, *, estimated: bool = False) -> Usage:
        return self._watcher.usage(estimated=estimated or (self.status == 200 and not self._complete))

    async def run(self, extra_headers: list[tuple[bytes, bytes]]) -> None:
        pump = asyncio.create_task(self._pump())
        try:
            try:
                head = await first_or_none(self._exchange.response(), self._stopped)
            except UpstreamUnavailable as exc:  # reset, or silent past `upstream.read_timeout`
                logger.warning("upstream bidirectional stream gave no response head: %s", exc.__cause__ or exc)
                await self._refuse(cast(BedrockError, unsent(exc)[1]))  # a 503 ServiceUnavailableException
                return
            if head is None:
                await self._stopped_before_head()
                return
            status, raw_headers = head
            self.status = status
            # One id for the checkpoints and the final event, even if Bedrock sent none.
            self.request_id = next((v.decode("latin-1") for n, v in raw_headers if n.lower() == b"x-amzn-requestid"),
                                   None) or new_request_id()
            headers = response_headers_for_client(raw_headers, keep_length=status != 200) + extra_headers
            await self._send({"type": "http.response.start", "status": status, "headers": headers})
            if status != 200:  # an error, JSON: relayed whole as Bedrock sent it
                await self._relay_body(framed=False)
                return
            await self._relay_body(framed=True)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _stopped_before_head(self) -> None:
        if self._outcome.refused is not None:
            await self._refuse(InvalidSignatureException(str(self._outcome.refused)))
        elif self._outcome.shutdown:
            await self._refuse(ServiceUnavailableException(_SHUTTING_DOWN))
        else:
            self.hung_up = True

    async def _refuse(self, error: BedrockError) -> None:
        """Answer with `error` before any response head."""
        self.status = error.status
        await send_error(self._send, error)

    async def _relay_body(self, *, framed: bool) -> None:
        output = asyncio.create_task(self._output(framed))
        try:
            finished = await first_or_none(output, self._stopped)
        except UpstreamBroken as exc:
            logger.warning("upstream bidirectional stream ended early: %s", exc)
            await self._end_with(ServiceUnavailableException("The upstream stream ended before it was complete."))
            return
        if finished is None:  # the client left, sent an event that does not verify, or a shutdown cut it
            if self._outcome.refused is not None:
                await self._end_with(ValidationException(str(self._outcome.refused)))
            elif self._outcome.shutdown:
                await self._end_with(ServiceUnavailableException(_SHUTTING_DOWN))
            else:
                self.hung_up = True
            return
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _output(self, framed: bool) -> bool:
        # Closed here wherever reading stops (cancelled in `send` by a hang-up, the watcher
        # raising), not left suspended for asyncio's finalizer to close at a moment nobody chose.
        async with contextlib.aclosing(self._exchange.chunks()) as chunks:
            async for chunk in chunks:
                seen = self._watcher.events
                data = self._watcher.feed(chunk) if framed else chunk
                if self._watcher.events != seen:
                    self.checkpoints.seen()  # before the client sees it: what it saw is written down
                if not data:
                    continue
                if self.first_byte is None:
                    self.first_byte = time.perf_counter()
                await self._send({"type": "http.response.body", "body": data, "more_body": True})
        self._complete = True
        return True

    async def _end_with(self, error: BedrockError) -> None:
        await self._send({"type": "http.response.body", "body": stream_error_frame(error), "more_body": False})

    async def _pump(self) -> None:
        """The client's envelopes, verified and re-signed, upstream; then a watch for a hang-up."""
        splitter, buffer = FrameSplitter(), EventStreamBuffer()
        try:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    self._outcome.client_gone = True
                    break
                try:
                    frames = splitter.feed(message.get("body", b""))
                except ValueError as exc:
                    raise EventChainError(f"malformed event-stream frame: {exc}") from None
                if splitter.pending > self._max_event_bytes:  # refused while it grows, whole or not
                    raise EventChainError(_TOO_LARGE.format(self._max_event_bytes))
                for envelope in envelopes(buffer, frames):
                    if len(envelope.payload) > self._max_event_bytes:
                        raise EventChainError(_TOO_LARGE.format(self._max_event_bytes))
                    await self._exchange.send(self._signer.sign(self._open(envelope)))
                if not message.get("more_body", False):
                    await self._exchange.end()
                    while (await self._receive())["type"] != "http.disconnect":
                        pass
                    self._outcome.client_gone = True
                    break
        except EventChainError as exc:
            logger.info("a bidirectional stream's input event was refused: %s", exc)
            self._outcome.refused = exc
        except UpstreamBroken:
            return  # the output side sees the cut and ends the client's stream
        self._stopped.set()

    def _open(self, envelope: EventStreamMessage) -> bytes:
        """The message inside a signed envelope. A bearer or trust caller's events carry no
        signature of theirs to check: an envelope is opened, a bare message taken as is."""
        if self._verifier is not None:
            return self._verifier.open(envelope)
        if ":chunk-signature" in envelope.headers:
            return bytes(envelope.payload)
        try:
            return encode_message(envelope.headers, envelope.payload)
        except (TypeError, AttributeError):
            raise EventChainError("An unsigned event must carry string headers only.") from None


async def first_or_none(awaitable: Awaitable[_T], stopped: asyncio.Event) -> _T | None:
    """`awaitable`'s result, or None if `stopped` is set first (the input pump stopped:
    the client left, or sent an event that does not verify).

    Whatever loses the race is cancelled and awaited before this returns, and both are
    if the caller is cancelled while it waits: a task left behind would keep reading
    the upstream, or waiting on the event, after the stream is gone. A read that fails
    while it is cancelled is not this stream's answer, and is not left to the loop's
    "exception was never retrieved" report either."""
    task = asyncio.ensure_future(awaitable)
    stop = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        losers: list[asyncio.Future[Any]] = [waiter for waiter in (task, stop) if not waiter.done()]
        for waiter in losers:
            waiter.cancel()
        if losers:
            await asyncio.wait(losers)
    if task in losers:
        if not task.cancelled():
            task.exception()  # retrieved: see above
        return None
    return task.result()
