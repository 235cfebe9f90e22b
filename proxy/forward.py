"""The data-port ASGI handler: identify, admit, forward, relay, meter.

One path for every operation (STYLE.md): build the upstream request, send it,
relay the body chunk by chunk as it arrives, and record usage in a `finally`
so a client hang-up or an upstream cut still meters what was used.

* Event streams are relayed frame by frame (never buffered beyond one partial
  frame): if the upstream cuts mid-stream, the client gets a well-formed
  exception frame instead of a silent truncation.
* A client that hangs up cancels the relay, which closes the upstream request.
* Upstream errors (status, `x-amzn-ErrorType`, body) pass through unchanged.
* A fallback to another model family is translated back: stream frames one by
  one, a JSON body whole (it is small and must be complete to translate).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from adapters.translate import StreamTranslator, TranslationError, translate_response
from adapters.usage import Usage
from adapters.watch import BodyUsageWatcher, StreamUsageWatcher
from metering.events import UsageEvent
from metering.pricing import PriceTable
from proxy.admission import Admission, Plan
from proxy.config import LimitsConfig
from proxy.errors import (
    BedrockError,
    InternalServerException,
    ServiceUnavailableException,
    error_parts,
    new_request_id,
    stream_error_frame,
)
from proxy.headers import request_headers_for_upstream, response_headers_for_client
from proxy.identity import Authenticator, Caller
from proxy.limits import check_request_head
from proxy.request import ClientGone, header, json_body, read_body
from proxy.response_cache import CachedResponse, ResponseCache
from proxy.routing import METERED, Operation, Route, parse_route
from proxy.upstream import Upstream, UpstreamBroken, UpstreamResponse, UpstreamUnavailable

__all__ = ["ProxyHandler"]

logger = logging.getLogger(__name__)

_EVENTSTREAM = "application/vnd.amazon.eventstream"
_CACHEABLE = frozenset({Operation.INVOKE_MODEL, Operation.CONVERSE})


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
        cache: ResponseCache | None = None,
        observe: Callable[[UsageEvent, bool], None] | None = None,
    ) -> None:
        #: Request head and body sizes; how much of a response body is read for usage.
        self._limits = limits
        self._cache = cache or ResponseCache()
        #: Metrics and event logs see every metered event (after the recorder).
        self._observe = observe or (lambda event, fallback: None)
        self._auth = authenticator
        self._admission = admission
        self._upstream = upstream
        self._recorder = recorder
        self._prices = prices

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        raw_path, _, raw_query = scope.get("raw_path", scope["path"].encode()).decode("latin-1").partition("?")
        raw_query = raw_query or scope.get("query_string", b"").decode("latin-1")
        method = scope["method"]
        try:
            check_request_head(scope["headers"], raw_path, raw_query, self._limits)
            route = parse_route(method, raw_path)
            body = await read_body(receive, scope["headers"], self._limits.max_body_bytes)
            caller = await self._auth.identify(
                method=method,
                raw_path=raw_path,
                raw_query=raw_query,
                headers=scope["headers"],
                authorization=header(scope, b"authorization"),
                host=header(scope, b"host") or "",
                body=body,
            )
            document = json_body(route, scope, body)
            cache_key = None
            if document is not None and route.operation in _CACHEABLE:
                if self._admission.caller_policy(caller).response_cache_ttl:
                    cache_key = ResponseCache.key(caller.org, caller.app, route.operation,
                                                  route.model_id or "", document)
                    hit = self._cache.get(cache_key)
                    if hit is not None:
                        await self._send_cached(send, route, caller, hit, started)
                        return
            plan = await self._admission.plan(route, caller, raw_path, body, document)
            try:
                headers = request_headers_for_upstream(scope["headers"])
                response = await self._upstream.send(method, plan.raw_path, raw_query, headers, plan.body,
                                                     caller.region)
            except UpstreamUnavailable as exc:
                self._meter(route, caller, plan, 503, None, Usage(), started, None)
                reason = "Timed out waiting for" if exc.timed_out else "Could not reach"
                raise ServiceUnavailableException(f"{reason} the upstream Bedrock endpoint.") from None
            except BaseException as exc:
                # Never sent (a credential refresh failed, a bug, a cancellation): recorded,
                # and what admission held for it goes back (issue #18).
                status = exc.status if isinstance(exc, BedrockError) else 500
                self._meter(route, caller, plan, status, None, Usage(), started, None)
                if not isinstance(exc, Exception) or isinstance(exc, BedrockError):
                    raise
                logger.exception("request to the upstream failed before it was sent")
                raise InternalServerException("The request could not be sent upstream.") from None
        except BedrockError as error:
            await _send_error(send, error)
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
        is_stream = status == 200 and response.headers.get("content-type", "").startswith(_EVENTSTREAM)
        family_model = plan.family_model or plan.model
        stream_watcher = StreamUsageWatcher(route.operation, family_model, plan.body) if is_stream else None
        body_watcher = None if is_stream else BodyUsageWatcher(route.operation, family_model, plan.body,
                                                               self._limits.max_usage_body_bytes)
        translate = plan.translate if status == 200 else None
        stream_translator = StreamTranslator(*translate, route.model_id or "") if translate and is_stream else None
        # A translated body or stream changes size, and a cut stream gains an exception
        # frame: those go out chunked (or re-measured), whatever the upstream declared.
        headers = response_headers_for_client(response.raw_headers, keep_length=not (is_stream or translate))
        if plan.model:
            headers += [
                (b"x-costkeeper-model-id", plan.model.encode()),
                (b"x-costkeeper-fallback", b"true" if plan.fallback else b"false"),
                (b"x-costkeeper-mode", plan.mode.encode()),
            ]
        first_byte: float | None = None
        kept: list[bytes] | None = [] if cache_key and status == 200 and not is_stream else None
        expected = None if is_stream else _content_length(response)
        received = 0
        metered = False
        finished = False
        unobserved: UsageEvent | None = None

        def meter_once() -> None:
            """Record the usage once, before the byte that completes the response goes out:
            a crash after the client has its answer must not lose the answer's usage.
            Metrics and the event log (`observe_once`) wait until it is out."""
            nonlocal metered, unobserved
            if metered:
                return
            metered = True
            if route.operation in METERED or route.operation == Operation.COUNT_TOKENS:
                if stream_watcher is not None:
                    usage = stream_watcher.finish()
                else:
                    usage = body_watcher.finish(status, response.headers)  # type: ignore[union-attr]
                unobserved = self._record(route, caller, plan, status, response.headers.get("x-amzn-requestid"),
                                          usage, started, first_byte)

        def observe_once() -> None:
            nonlocal unobserved
            if unobserved is not None:
                event, unobserved = unobserved, None
                self._observe(event, plan.fallback)

        def cache_body() -> None:
            if kept is not None and cache_key and plan.cache_ttl:
                # Stored before the last byte goes out: the client's next request may be the repeat.
                self._cache.put(cache_key, CachedResponse(200, tuple(headers), b"".join(kept), plan.cache_ttl))

        hang_up: _HangUpWatch | None = None
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
            hang_up = _HangUpWatch(receive)
            try:
                async for chunk in response.chunks():
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
                cache_body()
                if stream_translator is not None:
                    tail = stream_translator.finish()
                    if tail:
                        await send({"type": "http.response.body", "body": tail, "more_body": True})
                finished = True
            except UpstreamBroken as exc:
                if stream_watcher is None:
                    raise  # A non-stream body cannot be ended cleanly: abort the connection.
                logger.warning("upstream stream for %s ended early: %s", route.operation, exc)
                meter_once()
                frame = stream_error_frame(
                    ServiceUnavailableException("The upstream stream ended before it was complete.")
                )
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
            hang_up.stop()
            meter_once()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            observe_once()  # the client has its answer: metrics and the event log cost it no latency
        except asyncio.CancelledError:
            if hang_up is None or not hang_up.stop():
                raise
            hang_up.forgive()  # the client is gone: the finally below drops the upstream request
        finally:
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
        self, send: Send, route: Route, caller: Caller, hit: CachedResponse, started: float
    ) -> None:
        """Answer from the cache: a fresh request id, no upstream call, metered at zero cost."""
        request_id = new_request_id()
        headers = [(k, v) for k, v in hit.headers if k.lower() != b"x-amzn-requestid"]
        headers += [(b"x-amzn-requestid", request_id.encode()), (b"x-costkeeper-cache", b"hit")]
        model = next((v.decode() for k, v in hit.headers if k == b"x-costkeeper-model-id"), route.model_id or "")
        event = UsageEvent.from_usage(
            Usage(), self._prices, request_id=request_id, timestamp=time.time(), org=caller.org,
            app=caller.app, operation=str(route.operation), requested_model=route.model_id or "",
            model=model, latency_ms=(time.perf_counter() - started) * 1000, status=hit.status, cached=True,
        )
        self._recorder.record(event)
        self._observe(event, False)
        await send({"type": "http.response.start", "status": hit.status, "headers": headers})
        await send({"type": "http.response.body", "body": hit.body, "more_body": False})

    def _meter(self, route: Route, caller: Caller, plan: Plan, status: int, request_id: str | None,
               usage: Usage, started: float, first_byte: float | None) -> None:
        event = self._record(route, caller, plan, status, request_id, usage, started, first_byte)
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
    ) -> UsageEvent | None:
        """Journal the request's usage and settle what admission reserved for it; the
        event, for `_observe` (metrics, event log, alerts), or None if nothing is metered."""
        if not plan.model:
            return None
        self._admission.settle_rate(plan, usage)
        reserved, lease = self._admission.settle(plan, usage)
        event = UsageEvent.from_usage(
            usage,
            self._prices,
            request_id=request_id or new_request_id(),
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
            reserved_micro_usd=reserved,
            lease=lease,
        )
        self._recorder.record(event)
        return event


class _HangUpWatch:
    """Cancels the relaying task when the client hangs up, which closes the upstream
    request (Bedrock stops generating). One bare asyncio task: an anyio task group
    per response cost ~8 % of the CPU of a request (bench/RESULTS.md)."""

    __slots__ = ("_gone", "_relay", "_stopped", "_task")

    def __init__(self, receive: Receive) -> None:
        self._relay = asyncio.current_task()
        self._gone = False
        self._stopped = False
        self._task = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        # The server also says "disconnect" once the response is complete: `stop()` comes first then.
        if not self._stopped and self._relay is not None:
            self._gone = True
            self._relay.cancel()

    def stop(self) -> bool:
        """No more watching (call before the last byte goes out); whether the client was gone."""
        if not self._stopped:
            self._stopped = True
            self._task.cancel()
        return self._gone

    def forgive(self) -> None:
        """The cancellation was ours: take it back so the request ends normally."""
        if self._relay is not None:
            self._relay.uncancel()


def _content_length(response: UpstreamResponse) -> int | None:
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None


async def _send_error(send: Send, error: BedrockError) -> None:
    status, headers, payload = error_parts(error, new_request_id())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
