"""Relaying an upstream response to the client, and metering it, whatever ends it.

`ProxyHandler` (proxy/forward.py) identifies, admits and sends the request; what
comes back is relayed here chunk by chunk as it arrives, and the usage is recorded
in a `finally` so a client hang-up or an upstream cut still meters what was used.

* Event streams are relayed frame by frame (never buffered beyond one partial
  frame): if the upstream cuts mid-stream, the client gets a well-formed
  exception frame instead of a silent truncation.
* A client that hangs up cancels the relay. Unless the usage is already known,
  the upstream is read a little longer, bounded in time and bytes
  (`limits.hangup_tail_*`), without relaying it: a client that leaves right after
  `messageStop` must not choose to be billed an estimate instead of the `metadata`
  frame's count. Then the upstream request is closed (Bedrock stops generating).
* Upstream errors (status, `x-amzn-ErrorType`, body) pass through unchanged.
* A fallback to another model family is translated back: stream frames one by
  one, a JSON body whole (it is small and must be complete to translate).

On the hot path since it left the handler: one `Relay` per handler holds what every
response needs, and the handler keeps its bound `relay`, so a request costs the one
call it cost as the handler's method, and a chunk what it cost there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable
from types import AsyncGeneratorType
from typing import cast

from starlette.types import Receive, Send

from adapters.tiers import served_tier
from adapters.translate import StreamTranslator, TranslationError, translate_response
from adapters.usage import Usage
from adapters.watch import BodyUsageWatcher, StreamUsageWatcher
from metering.events import UsageEvent
from proxy.admission import Plan
from proxy.config import LimitsConfig
from proxy.errors import (
    BedrockError,
    InternalServerException,
    ServiceUnavailableException,
    send_error,
    stream_error_frame,
)
from proxy.hangup import HangUpWatch, read_tail
from proxy.headers import response_headers_for_client
from proxy.identity import Caller
from proxy.response_cache import CachedResponse, ResponseCache
from proxy.routing import METERED, STREAMING, Operation, Route
from proxy.stream_drain import StreamDrain
from proxy.upstream import UpstreamBroken, UpstreamResponse

__all__ = ["Record", "Relay", "costkeeper_headers"]

logger = logging.getLogger(__name__)

_EVENTSTREAM = "application/vnd.amazon.eventstream"
#: Relayed by `Relay.relay` and metered there (tokens, or zero for CountTokens).
_RECORDED = METERED | {Operation.COUNT_TOKENS}

#: Journals a request's usage and settles its admission (`ProxyHandler._record`): route,
#: caller, plan, status, upstream request id, usage, started, first byte, hung up. The
#: event to observe, or None if nothing is metered.
Record = Callable[[Route, Caller, Plan, int, str | None, Usage, float, float | None, bool], UsageEvent | None]


class Relay:
    """The relay of one handler (one configuration): its limits, response cache, stream
    drain, and how a response's usage is recorded and observed."""

    __slots__ = ("_cache", "_drain", "_limits", "_observe", "_record")

    def __init__(self, *, limits: LimitsConfig, cache: ResponseCache, drain: StreamDrain, record: Record,
                 observe: Callable[[UsageEvent, bool], None]) -> None:
        #: How much of a body is read for usage, and of the upstream after a hang-up.
        self._limits = limits
        self._cache = cache
        #: Open streams, cut `server.stream_drain_timeout` after a SIGTERM (proxy/stream_drain.py).
        self._drain = drain
        self._record = record
        #: Metrics and the event log, once the client has its answer.
        self._observe = observe

    async def relay(
        self,
        receive: Receive,
        send: Send,
        route: Route,
        caller: Caller,
        plan: Plan,
        response: UpstreamResponse,
        started: float,
        cache_key: str | None = None,
    ) -> None:
        """Send `response` (the upstream's answer to `plan`) to the client as it arrives, and
        meter it once, whatever ends it. `cache_key`: where a complete 200 body is kept."""
        status = response.status
        is_stream = (status == 200 and route.operation in STREAMING
                     and response.headers.get("content-type", "").startswith(_EVENTSTREAM))
        family_model = plan.family_model or plan.model
        stream_watcher = StreamUsageWatcher(route.operation, family_model, plan.body) if is_stream else None
        body_watcher = None if is_stream else BodyUsageWatcher(route.operation, family_model, plan.body,
                                                               self._limits.max_usage_body_bytes)
        translate = plan.translate if status == 200 else None
        stream_translator = StreamTranslator(*translate, route.model_id or "") if translate and is_stream else None
        # A translated body or stream changes size, and a cut stream gains an exception
        # frame: those go out chunked (or re-measured), whatever the upstream declared.
        upstream_headers = response_headers_for_client(response.raw_headers, keep_length=not (is_stream or translate))
        headers = upstream_headers + costkeeper_headers(plan.model, plan.fallback, plan.mode)
        first_byte: float | None = None
        kept: list[bytes] | None = [] if cache_key and status == 200 and not is_stream else None
        expected = None if is_stream else _content_length(response)
        received = 0
        metered = False
        finished = False
        hung_up = False
        ended = False  # the last body message is out
        unobserved: UsageEvent | None = None

        def meter_once() -> None:
            """Record the usage once, before the byte that completes the response goes out:
            a crash after the client has its answer must not lose the answer's usage.
            Metrics and the event log (`observe_once`) wait until it is out."""
            nonlocal metered, unobserved
            if metered:
                return
            metered = True
            if route.operation in _RECORDED:
                if stream_watcher is not None:
                    usage = stream_watcher.finish()
                else:
                    usage = body_watcher.finish(status, response.headers)  # type: ignore[union-attr]
                usage = served_tier(plan.tier, response.headers, usage)
                unobserved = self._record(route, caller, plan, status, response.headers.get("x-amzn-requestid"),
                                          usage, started, first_byte, hung_up)

        def observe_once() -> None:
            nonlocal unobserved
            if unobserved is not None:
                event, unobserved = unobserved, None
                self._observe(event, plan.fallback)

        def cache_body() -> None:
            """Store a complete 200 once, before the last byte goes out: the client's next
            request may be the repeat."""
            nonlocal kept
            if kept is not None and cache_key and plan.cache_ttl:
                self._cache.put(cache_key, CachedResponse(200, tuple(upstream_headers), b"".join(kept),
                                                          plan.cache_ttl, plan.model))
            kept = None

        hang_up: HangUpWatch | None = None
        chunks: AsyncGenerator[bytes, None] | None = None
        shutting_down = False

        def cut() -> None:
            """The shutdown's bound is reached: end the stream as an upstream cut ends it."""
            nonlocal shutting_down
            shutting_down = True
            response.close()

        if is_stream:
            self._drain.opened(cut)
        try:
            if translate and not is_stream:
                try:
                    await _send_translated(send, route, plan, response, headers, body_watcher, meter_once)
                except BedrockError as error:
                    await send_error(send, error)
                finished = True
                observe_once()
                return
            await send({"type": "http.response.start", "status": status, "headers": headers})
            # A body Bedrock has already sent whole is relayed without waiting on it: there is
            # no wait for a client's hang-up to cut short (and no task to start per request).
            hang_up = HangUpWatch(receive) if is_stream or not response.body_in_hand else None
            try:
                if hang_up is None:
                    # A whole body in hand: taken at once (no generator to drive, then close) and
                    # ended with its last bytes, one ASGI message fewer (with no hang-up watch,
                    # nothing is to be stopped before the end).
                    chunk = response.in_hand()
                    if chunk:
                        body_watcher.feed(chunk)  # type: ignore[union-attr]
                        received = len(chunk)
                        if kept is not None:
                            kept.append(chunk)
                        first_byte = time.perf_counter()
                        ended = expected is not None and received >= expected
                        if ended:
                            cache_body()
                            meter_once()
                        await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
                else:
                    chunks = response.chunks()
                    async for chunk in chunks:
                        if stream_watcher is not None:
                            chunk = stream_watcher.feed(chunk)
                            if stream_translator is not None and chunk:
                                chunk = stream_translator.feed(chunk)
                            done = stream_watcher.complete
                        else:
                            body_watcher.feed(chunk)  # type: ignore[union-attr]
                            received += len(chunk)
                            if kept is not None:
                                kept.append(chunk)
                            done = expected is not None and received >= expected
                        if not chunk:
                            continue
                        if first_byte is None:
                            first_byte = time.perf_counter()
                        if done:
                            cache_body()
                            meter_once()
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if stream_watcher is not None:
                    stream_watcher.end()
                cache_body()
                if stream_translator is not None:
                    tail = stream_translator.finish()
                    if tail:
                        await send({"type": "http.response.body", "body": tail, "more_body": True})
                finished = True
            except UpstreamBroken as exc:
                if stream_watcher is None:
                    raise  # A non-stream body cannot be ended cleanly: abort the connection.
                if not shutting_down:
                    logger.warning("upstream stream for %s ended early: %s", route.operation, exc)
                meter_once()
                frame = stream_error_frame(ServiceUnavailableException(
                    "The proxy is shutting down: the stream was cut before it was complete." if shutting_down
                    else "The upstream stream ended before it was complete."))
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            except TranslationError as exc:
                # The fallback model's stream held something that has no shape in the
                # client's family: end the stream with an exception the SDK raises.
                logger.warning("stream translation for %s failed: %s", route.operation, exc)
                meter_once()
                frame = stream_error_frame(
                    InternalServerException("The fallback model's stream could not be translated.")
                )
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            if hang_up is not None:
                hang_up.stop()
            meter_once()
            if not ended:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            observe_once()  # the client has its answer: metrics and the event log cost it no latency
        except asyncio.CancelledError:
            if hang_up is None or not hang_up.stop():
                raise
            hang_up.forgive()  # the client is gone: read the tail, then the finally drops the upstream
            hung_up = True

            def feed(chunk: bytes) -> bool:
                nonlocal received
                if stream_watcher is not None:
                    stream_watcher.feed(chunk)
                    return stream_watcher.complete
                body_watcher.feed(chunk)  # type: ignore[union-attr]
                received += len(chunk)
                return expected is not None and received >= expected

            done = stream_watcher.complete if stream_watcher is not None else (
                expected is not None and received >= expected)
            if not done:
                logger.info("client hung up on %s %s before its usage; reading the upstream for it",
                            route.operation, response.headers.get("x-amzn-requestid", "-"))
                finished = await read_tail(response, feed, self._limits)
                if finished and stream_watcher is not None:
                    stream_watcher.end()
        finally:
            if chunks is not None and cast(AsyncGeneratorType, chunks).ag_frame is not None:  # suspended, not ended
                # Stopped before its end (a hang-up or a send cut short, a translation error):
                # closed here. Left to the garbage collector, the
                # suspended generator would be closed by asyncio's finalizer hook, a task and
                # a self-pipe write each time (issue #20).
                await chunks.aclose()
            if is_stream:
                self._drain.closed(cut)
            if hang_up is not None:
                hang_up.stop()
            # Read to the end: back to the pool. Otherwise (hang-up, cut, error): dropped.
            if finished:
                response.release()
            else:
                response.close()
            meter_once()
            observe_once()


async def _send_translated(
    send: Send,
    route: Route,
    plan: Plan,
    response: UpstreamResponse,
    headers: list[tuple[bytes, bytes]],
    watcher: BodyUsageWatcher | None,
    meter_once: Callable[[], None],
) -> None:
    """A JSON body from another family, translated whole into the client's shape."""
    assert plan.translate is not None and watcher is not None
    try:
        raw = await response.read()
    except UpstreamBroken:
        meter_once()
        raise ServiceUnavailableException("The upstream response ended before it was complete.") from None
    watcher.feed(raw)
    client_family, served_family = plan.translate
    try:
        document = json.loads(raw)
        if not isinstance(document, dict):
            raise TranslationError(served_family, "body", "not a JSON object")
        translated = translate_response(client_family, served_family, document, route.model_id or "")
    except (ValueError, RecursionError, TranslationError) as exc:
        # Metered all the same (the watcher saw the body); the client gets a clear 500.
        logger.warning("response translation for %s failed: %s", route.operation, exc)
        meter_once()
        raise InternalServerException("The fallback model's response could not be translated.") from None
    payload = json.dumps(translated, separators=(",", ":")).encode()
    headers = [*headers, (b"content-length", str(len(payload)).encode())]
    meter_once()
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


def costkeeper_headers(model: str, fallback: bool, mode: str) -> list[tuple[bytes, bytes]]:
    """The model that answered, whether it is a fallback, and the quota mode (README)."""
    if not model:
        return []
    return [
        (b"x-costkeeper-model-id", model.encode()),
        (b"x-costkeeper-fallback", b"true" if fallback else b"false"),
        (b"x-costkeeper-mode", mode.encode()),
    ]


def _content_length(response: UpstreamResponse) -> int | None:
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None
