"""The data-port ASGI handler: identify (from the head, then the body), admit, forward,
relay, meter.

One path for every operation (STYLE.md): build the upstream request, send it,
relay the body chunk by chunk as it arrives, and record usage in a `finally`
so a client hang-up or an upstream cut still meters what was used.

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
* InvokeModelWithBidirectionalStream is identified from its head and handed to
  proxy/bidi_relay.py (its body is a stream both ways, never read whole).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable
from types import AsyncGeneratorType, EllipsisType
from typing import Any, cast

from starlette.types import Receive, Scope, Send

from adapters.tiers import STANDARD, requested_tier, served_tier
from adapters.translate import StreamTranslator, TranslationError, translate_response
from adapters.usage import Usage
from adapters.watch import BodyUsageWatcher, StreamUsageWatcher
from metering.events import UsageEvent
from metering.pricing import PriceTable
from metering.tags import Tags
from proxy.admission import Admission, Plan
from proxy.bidi_relay import BidiRelay
from proxy.config import LimitsConfig
from proxy.errors import (
    BedrockError,
    InternalServerException,
    ServiceUnavailableException,
    error_parts,
    new_request_id,
    refusal,
    stream_error_frame,
)
from proxy.hangup import HangUpWatch, read_tail
from proxy.headers import request_headers_for_upstream, response_headers_for_client
from proxy.identity import Authenticator, AuthRefused, Caller
from proxy.inflight import BodyBudget, Reservation
from proxy.limits import check_request_head
from proxy.request import ClientGone, header, json_body, read_body
from proxy.response_cache import CachedResponse, ResponseCache
from proxy.routing import METERED, STREAMING, Operation, Route, parse_route
from proxy.stream_drain import StreamDrain
from proxy.tags import TagReader
from proxy.upstream import Upstream, UpstreamBroken, UpstreamResponse
from proxy.upstream_errors import unsent
from proxy.whole_body import WHOLE_BODY, WholeBodyOperations

__all__ = ["ProxyHandler"]

logger = logging.getLogger(__name__)

_EVENTSTREAM = "application/vnd.amazon.eventstream"
_CACHEABLE = frozenset({Operation.INVOKE_MODEL, Operation.CONVERSE})
#: Relayed by `_relay` and metered there (tokens, or zero for CountTokens).
_RECORDED = METERED | {Operation.COUNT_TOKENS}
_CONVERSE = frozenset({Operation.CONVERSE, Operation.CONVERSE_STREAM})


class ProxyHandler:
    def __init__(
        self,
        *,
        authenticator: Authenticator,
        admission: Admission,
        upstream: Upstream,
        recorder: Any,
        prices: PriceTable,
        limits: LimitsConfig,
        whole_body: WholeBodyOperations,
        cache: ResponseCache | None = None,
        bodies: BodyBudget | None = None,
        observe: Callable[[UsageEvent, bool], None] | None = None,
        on_refused: Callable[[AuthRefused, Scope, str], None] | None = None,
        tags: TagReader | None = None,
        checkpoint_interval: float = 5.0,
        drain: StreamDrain | None = None,
    ) -> None:
        #: Request head and body sizes; how much of a response body is read for usage.
        self._limits = limits
        #: Async invocations and guardrails: answers read whole (ownership, filtering, units).
        self._whole_body = whole_body
        self._cache = cache or ResponseCache()
        #: Metrics and event logs see every metered event (after the recorder).
        self._observe = observe or (lambda event, fallback: None)
        self._auth = authenticator
        self._admission = admission
        self._upstream = upstream
        self._recorder = recorder
        self._prices = prices
        #: Request bodies held at once by this process (proxy/inflight.py).
        #: Shared by the handlers of successive config reloads (proxy/admin/reload.py).
        self._bodies = bodies if bodies is not None else BodyBudget(limits.max_inflight_body_bytes)
        #: Every refused credential (and other 403): access log, metric, tally (proxy/auth_failures.py).
        self._on_refused = on_refused or (lambda refused, scope, request_id: None)
        #: Cost attribution tags: `requestMetadata` keys and `x-costkeeper-tag-*` headers.
        self._tags = tags or TagReader()
        #: Open streams, cut `server.stream_drain_timeout` after a SIGTERM (proxy/stream_drain.py).
        self._drain = drain = drain or StreamDrain()
        #: InvokeModelWithBidirectionalStream: relayed both ways over HTTP/2, metered here.
        self._bidi = BidiRelay(admission=admission, upstream=upstream, meter=self._meter,
                               costkeeper_headers=lambda plan: _costkeeper_headers(plan.model, plan.fallback,
                                                                                   plan.mode),
                               max_event_bytes=limits.max_body_bytes, checkpoint=self._checkpoint,
                               checkpoint_interval=checkpoint_interval, drain=drain)

    @property
    def inflight_body_bytes(self) -> int:
        """Request-body bytes the requests in flight hold (for the metrics)."""
        return self._bodies.held

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        reservation = self._bodies.reservation()
        try:
            await self._serve(scope, receive, send, reservation)
        finally:
            reservation.release()

    async def _serve(self, scope: Scope, receive: Receive, send: Send, reservation: Reservation) -> None:
        started = time.perf_counter()
        raw_path, _, raw_query = scope.get("raw_path", scope["path"].encode()).decode("latin-1").partition("?")
        raw_query = raw_query or scope.get("query_string", b"").decode("latin-1")
        method = scope["method"]
        body: bytes | None = None  # until it is read, a refusal closes the connection
        caller: Caller | None = None
        try:
            check_request_head(scope["headers"], raw_path, raw_query, self._limits)
            route = parse_route(method, raw_path)
            # Who is calling, from the head alone: nobody without a valid key gets a body read.
            identified = await self._auth.identify_head(
                method=method,
                raw_path=raw_path,
                raw_query=raw_query,
                headers=scope["headers"],
                authorization=header(scope, b"authorization"),
                host=header(scope, b"host") or "",
                secure=scope.get("scheme") == "https",
            )
            if route.operation is Operation.INVOKE_MODEL_BIDI:  # its body is a stream, never read whole
                await self._bidi.serve(scope, receive, send, route, identified, raw_path, raw_query, started,
                                       tags=self._tags.read(scope["headers"]))
                return
            body = await read_body(receive, scope["headers"], self._limits.max_body_bytes,
                                   chunk_timeout=self._limits.body_timeout, reservation=reservation)
            caller, body_sha256 = identified.verified(body)
            self._admission.check_operation(route.operation, caller)
            document = json_body(route, body)
            tags = self._tags.read(scope["headers"], document if route.operation in _CONVERSE else None)
            cache_key = None
            if document is not None and route.operation in _CACHEABLE:
                if self._admission.caller_policy(caller).response_cache_ttl:
                    cache_key = ResponseCache.key(caller.org, caller.app, route.operation,
                                                  route.model_id or "", document)
                    hit = self._cache.get(cache_key)
                    if hit is not None:
                        # Served only from the model a fresh request would get now, and
                        # with its fallback and mode (README "Response cache").
                        tier = requested_tier(route.operation in _CONVERSE, scope["headers"], document)
                        choice = await self._admission.current_choice(route, caller, document, tier)
                        if choice is not None and choice[0] == hit.model:
                            await self._send_cached(send, route, caller, hit, started, *choice[1:], tags=tags)
                            return
            tier = requested_tier(route.operation in _CONVERSE, scope["headers"], document) if document else STANDARD
            headers = request_headers_for_upstream(scope["headers"])
            plan = await self._admission.plan(route, caller, raw_path, body, document, tier)
            plan.tags = tags
            if route.operation in WHOLE_BODY:
                await self._whole_body.serve(send, method=method, route=route, caller=caller, plan=plan,
                                             raw_query=raw_query, headers=headers, document=document, started=started)
                return
            try:
                response = await self._upstream.send(method, plan.raw_path, raw_query, headers, plan.body,
                                                     caller.region,
                                                     body_sha256 if plan.body is body else None)
            except BaseException as exc:
                # Never sent: recorded, and what admission held for it goes back (issue #18).
                status, raised = unsent(exc)
                self._meter(route, caller, plan, status, None, Usage(), started, None)
                if raised is exc:
                    raise
                raise raised from None
        except AuthRefused as refused:
            request_id = new_request_id()
            self._on_refused(refused, scope, request_id)
            await _send_error(send, refused.error, request_id, close=body is None)
            return
        except BedrockError as error:
            request_id = new_request_id()
            if error.status == 403 and caller is not None:  # a policy's refusal of a known caller
                self._on_refused(AuthRefused(refusal(error, error.reason or "not_allowed"), caller.access_key_id,
                                             caller), scope, request_id)
            await _send_error(send, error, request_id, close=body is None)
            return
        except ClientGone:
            return
        await self._relay(receive, send, route, caller, plan, response, started, cache_key)

    async def _relay(
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
        headers = upstream_headers + _costkeeper_headers(plan.model, plan.fallback, plan.mode)
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
            if kept is not None and cache_key and plan.cache_ttl:
                # Stored before the last byte goes out: the client's next request may be the repeat.
                self._cache.put(cache_key, CachedResponse(200, tuple(upstream_headers), b"".join(kept),
                                                          plan.cache_ttl, plan.model))

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
                    await self._send_translated(send, route, plan, response, headers, body_watcher, meter_once)
                except BedrockError as error:
                    await _send_error(send, error)
                finished = True
                observe_once()
                return
            await send({"type": "http.response.start", "status": status, "headers": headers})
            # A body Bedrock has already sent whole is relayed without waiting on it: there is
            # no wait for a client's hang-up to cut short (and no task to start per request).
            hang_up = HangUpWatch(receive) if is_stream or not response.body_in_hand else None
            try:
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
                    # A whole body in hand ends with its last bytes: one ASGI message fewer
                    # (with no hang-up watch, nothing is to be stopped before the end).
                    ended = done and hang_up is None
                    await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
                    if ended:  # nothing may follow `more_body: False` (the parser stops at the length)
                        break  # the finally closes the generator
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
                # Stopped before its end (a whole body's last bytes, a hang-up or a send cut
                # short, a translation error): closed here. Left to the garbage collector, the
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
        self,
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

    async def _send_cached(
        self, send: Send, route: Route, caller: Caller, hit: CachedResponse, started: float,
        fallback: bool, mode: str, *, tags: Tags = (),
    ) -> None:
        """Answer from the cache: a fresh request id, no upstream call, metered at zero cost.
        The fallback and mode headers are today's, not those of the day it was stored."""
        request_id = new_request_id()
        headers = [(k, v) for k, v in hit.headers if k.lower() != b"x-amzn-requestid"]
        headers += [(b"x-amzn-requestid", request_id.encode()), (b"x-costkeeper-cache", b"hit")]
        headers += _costkeeper_headers(hit.model, fallback, mode)
        event = UsageEvent.from_usage(
            Usage(), self._prices, request_id=request_id, timestamp=time.time(), org=caller.org,
            app=caller.app, operation=str(route.operation), requested_model=route.model_id or "",
            model=hit.model, latency_ms=(time.perf_counter() - started) * 1000, status=hit.status, cached=True,
            tags=tags,
        )
        self._recorder.record(event)
        self._observe(event, fallback)
        await send({"type": "http.response.start", "status": hit.status, "headers": headers})
        await send({"type": "http.response.body", "body": hit.body, "more_body": False})

    def _meter(self, route: Route, caller: Caller, plan: Plan, status: int, request_id: str | None,
               usage: Usage, started: float, first_byte: float | None, hung_up: bool = False) -> None:
        event = self._record(route, caller, plan, status, request_id, usage, started, first_byte, hung_up)
        if event is not None:
            self._observe(event, plan.fallback)

    def _record(
        self,
        route: Route,
        caller: Caller,
        plan: Plan,
        status: int,
        request_id: str | None,
        usage: Usage,
        started: float,
        first_byte: float | None,
        hung_up: bool = False,
    ) -> UsageEvent | None:
        """Journal the request's usage and settle what admission reserved for it; the
        event, for `_observe` (metrics, event log, alerts), or None if nothing is metered."""
        if not plan.model:
            return None
        self._admission.settle_rate(plan, usage)
        # Priced once, here: the lease is settled with the cost the event carries.
        cost = self._prices.cost_pico_usd(plan.model, usage)
        reserved, lease = self._admission.settle_cost(plan, cost or 0)
        event = self._event(route, caller, plan, status, request_id or new_request_id(), usage, started, first_byte,
                            hung_up, reserved, lease, cost)
        self._recorder.record(event)
        return event

    def _checkpoint(self, route: Route, caller: Caller, plan: Plan, request_id: str, usage: Usage, started: float,
                    first_byte: float | None) -> None:
        """An open bidirectional stream's usage so far, flagged estimated: what a crash
        before its end records (metering/checkpoints.py). It settles nothing and names no
        lease: all its cost counts as spent, and the lease's share (1 pico-USD) is freed
        when the dead process's lease expires."""
        if plan.model:
            self._recorder.checkpoint(self._event(route, caller, plan, 200, request_id, usage, started, first_byte))

    def _event(self, route: Route, caller: Caller, plan: Plan, status: int, request_id: str, usage: Usage,
               started: float, first_byte: float | None, hung_up: bool = False, reserved: int = 0,
               lease: str = "", cost: int | None | EllipsisType = ...) -> UsageEvent:
        return UsageEvent.from_usage(
            usage,
            self._prices,
            cost=cost,
            request_id=request_id,
            # The admission's time: reserved, settled, aggregated and reported on its UTC day.
            timestamp=plan.admitted_at or time.time(),
            org=caller.org,
            app=caller.app,
            operation=str(route.operation),
            requested_model=route.model_id or "",
            model=plan.model,
            latency_ms=(time.perf_counter() - started) * 1000,
            first_byte_ms=None if first_byte is None else (first_byte - started) * 1000,
            status=status,
            quota_scope=plan.quota_scope,
            quota_model=plan.quota_model,
            reserved_pico_usd=reserved,
            lease=lease,
            hung_up=hung_up,
            tags=plan.tags,
        )


def _costkeeper_headers(model: str, fallback: bool, mode: str) -> list[tuple[bytes, bytes]]:
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


async def _send_error(send: Send, error: BedrockError, request_id: str | None = None, *,
                      close: bool = False) -> None:
    """`close`: the body was not read (a refusal before it, a stalled or oversized one):
    the connection cannot carry another request, and a refused body is never read."""
    status, headers, payload = error_parts(error, request_id or new_request_id())
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
