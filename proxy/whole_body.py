"""Operations whose answer the proxy reads whole before the client gets it: the
async-invocation operations and the guardrail operations.

Their answers are small JSON documents the proxy must see first: a started job's
ARN is recorded before the client can ask for it, a list of jobs is filtered to the
caller's own, and ApplyGuardrail's `usage` says what it billed. None of them is a
stream, so nothing is buffered that a client waits on byte by byte.

Each is metered as a `UsageEvent` with its operation and zero tokens: a job at its
price per second or image (`metering/unit_prices.py`), ApplyGuardrail at its price
per text unit under the model name `guardrail`, GetAsyncInvoke and ListAsyncInvokes
at no cost (Bedrock bills none), InvokeGuardrailChecks unpriced. The model column
names the job's model for Start and Get, `async-invoke` for List and
`guardrail-checks` for InvokeGuardrailChecks.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import aclosing
from typing import Any
from urllib.parse import unquote

from starlette.types import Send

from adapters.units import guardrail_units
from adapters.usage import Usage
from metering.events import UsageEvent
from metering.unit_prices import UnitPrices
from proxy.admission import Admission, Plan
from proxy.errors import BedrockError, ServiceUnavailableException, error_parts, new_request_id
from proxy.headers import response_headers_for_client
from proxy.identity import Caller
from proxy.jobs import Jobs
from proxy.relay import costkeeper_headers
from proxy.routing import Operation, Route
from proxy.upstream import Upstream, UpstreamBroken, UpstreamResponse, UpstreamUnavailable

__all__ = ["WHOLE_BODY", "WholeBodyOperations"]

logger = logging.getLogger(__name__)

WHOLE_BODY = frozenset({
    Operation.START_ASYNC_INVOKE,
    Operation.GET_ASYNC_INVOKE,
    Operation.LIST_ASYNC_INVOKES,
    Operation.APPLY_GUARDRAIL,
    Operation.INVOKE_GUARDRAIL_CHECKS,
})
#: The model column of events for operations that name no model.
_MODEL_OF = {
    Operation.LIST_ASYNC_INVOKES: "async-invoke",
    Operation.APPLY_GUARDRAIL: "guardrail",
    Operation.INVOKE_GUARDRAIL_CHECKS: "guardrail-checks",
}


class WholeBodyOperations:
    def __init__(
        self,
        *,
        upstream: Upstream,
        jobs: Jobs,
        admission: Admission,
        recorder: Any,
        unit_prices: UnitPrices,
        max_body_bytes: int,
        observe: Callable[[UsageEvent, bool], None],
    ) -> None:
        self._upstream = upstream
        self._jobs = jobs
        self._admission = admission
        self._recorder = recorder
        self._unit_prices = unit_prices
        #: Larger answers are refused: none of these operations sends one near it.
        self._max_body_bytes = max_body_bytes
        self._observe = observe

    async def serve(self, send: Send, *, method: str, route: Route, caller: Caller, plan: Plan, raw_query: str,
                    headers: dict[str, str], document: dict[str, Any] | None, started: float) -> None:
        """Answer `route` (one of WHOLE_BODY) for `caller`; raises BedrockError before
        anything was sent (the caller turns it into an error response). `document`:
        the request body as the client sent it, parsed."""
        operation = route.operation
        requested, model = _names(route, plan, document)
        if operation is Operation.GET_ASYNC_INVOKE:
            model = (await self._jobs.owned(caller, requested)).model
        try:
            response = await self._upstream.send(method, plan.raw_path, raw_query, headers, plan.body, caller.region)
        except UpstreamUnavailable as exc:
            self._meter(route, caller, plan, requested, model, 503, None, 0, started)
            reason = "Timed out waiting for" if exc.timed_out else "Could not reach"
            raise ServiceUnavailableException(f"{reason} the upstream Bedrock endpoint.") from None
        except BaseException:
            self._admission.release(plan)  # never sent: what admission held for it goes back
            raise
        request_id = response.headers.get("x-amzn-requestid") or new_request_id()
        status, error, body = response.status, None, b""
        # A started job runs whatever happens from here: metered even if its answer is lost.
        cost = self._jobs.job_cost(plan) if status == 200 and operation is Operation.START_ASYNC_INVOKE else 0
        try:
            body = await self._read(response)
            if status == 200:
                if operation is Operation.START_ASYNC_INVOKE:
                    outcome = await self._jobs.started(caller, plan, body, cost)
                    cost, error = outcome.cost, outcome.error
                elif operation is Operation.LIST_ASYNC_INVOKES:
                    body = await self._jobs.listed(caller, body)
                elif operation is Operation.APPLY_GUARDRAIL:
                    cost = self._unit_prices.cost_pico_usd(model, guardrail_units(_json(body)))
                elif operation is Operation.INVOKE_GUARDRAIL_CHECKS:
                    cost = None  # no price is known for it yet
        except BedrockError as exc:
            error = exc
        finally:
            # Also when cancelled (the server shutting down): usage is never lost.
            event = self._meter(route, caller, plan, requested, model, error.status if error else status,
                                request_id, cost, started)
        if error is not None:
            status, out_headers, body = error_parts(error, request_id)
        else:
            out_headers = response_headers_for_client(response.raw_headers, keep_length=False)
            out_headers.append((b"content-length", str(len(body)).encode()))
            out_headers += costkeeper_headers(plan.model, False, plan.mode)  # none for an operation naming no model
        await send({"type": "http.response.start", "status": status, "headers": out_headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        self._observe(event, False)

    async def _read(self, response: UpstreamResponse) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            # A refused answer's generator is closed here, not by asyncio's finalizer (issue #20).
            async with aclosing(response.chunks()) as body:
                async for chunk in body:
                    size += len(chunk)
                    if size > self._max_body_bytes:
                        raise ServiceUnavailableException("The upstream answer was larger than this proxy accepts.")
                    chunks.append(chunk)
        except UpstreamBroken:
            response.close()
            raise ServiceUnavailableException("The upstream response ended before it was complete.") from None
        except BaseException:
            response.close()
            raise
        response.release()
        return b"".join(chunks)

    def _meter(self, route: Route, caller: Caller, plan: Plan, requested: str, model: str, status: int,
               request_id: str | None, cost: int | None, started: float) -> UsageEvent:
        """Journal the call (zero tokens, `cost` pico-USD; None: unpriced) and settle
        what admission held for it (a job's exact cost: all of it comes from its lease)."""
        self._admission.settle_rate(plan, Usage())
        reserved, lease = self._admission.settle_cost(plan, cost or 0)
        event = UsageEvent(
            request_id=request_id or new_request_id(), timestamp=plan.admitted_at or time.time(), org=caller.org,
            app=caller.app,
            operation=str(route.operation), requested_model=requested, model=model,
            input_tokens=0, output_tokens=0, cache_read_tokens=0, cache_write_tokens=0,
            cost_pico_usd=cost or 0, priced=cost is not None, latency_ms=(time.perf_counter() - started) * 1000,
            first_byte_ms=None, status=status, estimated=False, quota_scope=plan.quota_scope,
            quota_model="" if plan.quota_model == model else plan.quota_model, reserved_pico_usd=reserved,
            lease=lease, tags=plan.tags,
        )
        self._recorder.record(event)
        return event


def _names(route: Route, plan: Plan, document: dict[str, Any] | None) -> tuple[str, str]:
    """(what the client named, the model column) before the upstream answers."""
    parts = plan.raw_path.split("/")
    if route.operation is Operation.START_ASYNC_INVOKE:
        named = (document or {}).get("modelId")
        return named if isinstance(named, str) else plan.model, plan.model
    if route.operation is Operation.GET_ASYNC_INVOKE:
        return unquote(parts[2]), ""
    if route.operation is Operation.APPLY_GUARDRAIL:
        return f"{unquote(parts[2])}:{unquote(parts[4])}", _MODEL_OF[route.operation]
    return "", _MODEL_OF[route.operation]


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None
