"""The data-port ASGI handler: identify (from the head, then the body), admit, forward.

One path for every operation (STYLE.md): build the upstream request, send it, and
hand the response to proxy/relay.py, which relays its body chunk by chunk as it
arrives and records usage in a `finally` (a client hang-up or an upstream cut still
meters what was used). A refusal is answered here, Bedrock-shaped; a request that
never reached the upstream is recorded here too.

* A cacheable request (InvokeModel, Converse) may be answered from the response
  cache, metered at zero cost.
* The async-invocation and guardrail operations are read whole
  (proxy/whole_body.py).
* InvokeModelWithBidirectionalStream is identified from its head and handed to
  proxy/bidi_relay.py (its body is a stream both ways, never read whole).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import EllipsisType
from typing import Any

from starlette.types import Receive, Scope, Send

from adapters.tiers import STANDARD, requested_tier
from adapters.usage import Usage
from metering.events import UsageEvent
from metering.pricing import PriceTable
from metering.tags import Tags
from proxy.admission import Admission, Plan
from proxy.bidi_relay import BidiRelay
from proxy.config import LimitsConfig
from proxy.errors import BedrockError, new_request_id, refusal, send_error
from proxy.headers import request_headers_for_upstream
from proxy.identity import Authenticator, AuthRefused, Caller
from proxy.inflight import BodyBudget
from proxy.limits import check_request_head
from proxy.relay import Relay, costkeeper_headers
from proxy.request import ClientGone, header, json_body, read_body
from proxy.response_cache import CachedResponse, ResponseCache
from proxy.routing import Operation, Route, parse_route
from proxy.stream_drain import StreamDrain
from proxy.tags import TagReader
from proxy.upstream import Upstream
from proxy.upstream_errors import unsent
from proxy.whole_body import WHOLE_BODY, WholeBodyOperations

__all__ = ["ProxyHandler"]

_CACHEABLE = frozenset({Operation.INVOKE_MODEL, Operation.CONVERSE})
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
        #: Upstream answers relayed to the client and metered (a bound method: one call per request).
        self._relay = Relay(limits=limits, cache=self._cache, drain=drain, record=self._record,
                            observe=self._observe).relay
        #: InvokeModelWithBidirectionalStream: relayed both ways over HTTP/2, metered here.
        self._bidi = BidiRelay(admission=admission, upstream=upstream, meter=self._meter,
                               costkeeper_headers=lambda plan: costkeeper_headers(plan.model, plan.fallback,
                                                                                   plan.mode),
                               max_event_bytes=limits.max_body_bytes, checkpoint=self._checkpoint,
                               checkpoint_interval=checkpoint_interval, drain=drain)

    @property
    def inflight_body_bytes(self) -> int:
        """Request-body bytes the requests in flight hold (for the metrics)."""
        return self._bodies.held

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One request, from its head to its last byte, in one coroutine: every suspension
        (the upstream's answer, a body's chunks) resumes through each coroutine it is
        nested in, and a request made one more (`_serve`) per call (issue #20)."""
        if scope["type"] != "http":
            return
        reservation = self._bodies.reservation()
        try:
            started = time.perf_counter()
            raw_path, _, raw_query = scope.get("raw_path", scope["path"].encode()).decode("latin-1").partition("?")
            raw_query = raw_query or scope.get("query_string", b"").decode("latin-1")
            method = scope["method"]
            scope_headers = scope["headers"]
            body: bytes | None = None  # until it is read, a refusal closes the connection
            caller: Caller | None = None
            try:
                check_request_head(scope_headers, raw_path, raw_query, self._limits)
                route = parse_route(method, raw_path)
                # Who is calling, from the head alone: nobody without a valid key gets a body read.
                identified = await self._auth.identify_head(
                    method=method,
                    raw_path=raw_path,
                    raw_query=raw_query,
                    headers=scope_headers,
                    authorization=header(scope, b"authorization"),
                    host=header(scope, b"host") or "",
                    secure=scope.get("scheme") == "https",
                )
                if route.operation is Operation.INVOKE_MODEL_BIDI:  # its body is a stream, never read whole
                    await self._bidi.serve(scope, receive, send, route, identified, raw_path, raw_query, started,
                                           tags=self._tags.read(scope_headers))
                    return
                body = await read_body(receive, scope_headers, self._limits.max_body_bytes,
                                       chunk_timeout=self._limits.body_timeout, reservation=reservation)
                caller, body_sha256 = identified.verified(body)
                self._admission.check_operation(route.operation, caller)
                document = json_body(route, body)
                tags = self._tags.read(scope_headers, document if route.operation in _CONVERSE else None)
                cache_key = None
                if document is not None and route.operation in _CACHEABLE:
                    if self._admission.caller_policy(caller).response_cache_ttl:
                        cache_key = ResponseCache.key(caller.org, caller.app, route.operation,
                                                      route.model_id or "", document)
                        hit = self._cache.get(cache_key)
                        if hit is not None:
                            # Served only from the model a fresh request would get now, and
                            # with its fallback and mode (README "Response cache").
                            tier = requested_tier(route.operation in _CONVERSE, scope_headers, document)
                            choice = await self._admission.current_choice(route, caller, document, tier)
                            if choice is not None and choice[0] == hit.model:
                                await self._send_cached(send, route, caller, hit, started, *choice[1:], tags=tags)
                                return
                tier = (requested_tier(route.operation in _CONVERSE, scope_headers, document) if document
                        else STANDARD)
                headers = request_headers_for_upstream(scope_headers)
                plan = await self._admission.plan(route, caller, raw_path, body, document, tier)
                plan.tags = tags
                if route.operation in WHOLE_BODY:
                    await self._whole_body.serve(send, method=method, route=route, caller=caller, plan=plan,
                                                 raw_query=raw_query, headers=headers, document=document,
                                                 started=started)
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
                await send_error(send, refused.error, request_id, close=body is None)
                return
            except BedrockError as error:
                request_id = new_request_id()
                if error.status == 403 and caller is not None:  # a policy's refusal of a known caller
                    self._on_refused(AuthRefused(refusal(error, error.reason or "not_allowed"),
                                                 caller.access_key_id, caller), scope, request_id)
                await send_error(send, error, request_id, close=body is None)
                return
            except ClientGone:
                return
            await self._relay(receive, send, route, caller, plan, response, started, cache_key)
        finally:
            reservation.release()

    async def _send_cached(
        self, send: Send, route: Route, caller: Caller, hit: CachedResponse, started: float,
        fallback: bool, mode: str, *, tags: Tags = (),
    ) -> None:
        """Answer from the cache: a fresh request id, no upstream call, metered at zero cost.
        The fallback and mode headers are today's, not those of the day it was stored."""
        request_id = new_request_id()
        headers = [(k, v) for k, v in hit.headers if k.lower() != b"x-amzn-requestid"]
        headers += [(b"x-amzn-requestid", request_id.encode()), (b"x-costkeeper-cache", b"hit")]
        headers += costkeeper_headers(hit.model, fallback, mode)
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
