"""The client-driven API on the admin port, for traffic that never passes through the
proxy (issue #23): Bedrock batch inference jobs, an application in another account.

* `GET /v1/select?label=premium`: the model a request for `label` would be served by
  now, for the caller's scope — the proxy's own chain, stickiness and quotas
  (`Admission.current_choice`, read-only) — with `mode`, `fallback` and its prices.
* `POST /v1/usage-reports`: what such traffic used, one record
  `{model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
  request_id, timestamp, request_metadata}` or `{"records": [...]}` (up to 1,000). The server prices it
  (`PriceTable`, exact pico-USD; a client never sends a cost), records a `UsageEvent`
  through the same recorder, with the quota scope and quota model the proxy would
  use, so it counts against the same quotas and shows in every report, metric and
  EMF line as proxied traffic does. `request_metadata` (a string map, as Converse's
  `requestMetadata`) carries cost attribution tags: the keys
  `attribution.request_metadata_keys` lists are metered as a proxied request's are.

Both authenticate the caller with its issued key exactly as the data port does
(SigV4 for service `bedrock`, or `Authorization: Bearer`, `proxy/identity.py`), not
with the admin token: a key's reports count for its own org and app only. Errors are
Bedrock-shaped (`x-amzn-ErrorType`, `{"message": …}`); a bad field is a 400 naming
the record and the field, and nothing of that request is recorded.

Reports are idempotent by `request_id` within the caller's org and app: the event's
id is `report:<org>/<app>:<request_id>`, claimed once in the store before it is
recorded — a conditional put on DynamoDB (`metering/dynamodb_reports.py`), a row
inserted once in SQLite (`metering/sqlite_reports.py`) — so of the same report sent
to several processes or replicas at once, one records it. A duplicate is answered
`"status": "duplicate"`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as HttpRoute

from adapters.usage import Usage
from metering.events import UsageEvent
from metering.money import usd_fields
from proxy.errors import (
    BedrockError,
    ServiceQuotaExceededException,
    ServiceUnavailableException,
    ValidationException,
    error_parts,
    new_request_id,
)
from proxy.identity import AuthRefused, Caller
from proxy.routing import Operation
from proxy.routing import Route as ModelRoute
from proxy.tags import TagReader

if TYPE_CHECKING:
    from metering.quotas import Selection
    from proxy.app import CostKeeper

__all__ = ["MAX_RECORDS", "client_routes"]

#: Records per `POST /v1/usage-reports`.
MAX_RECORDS = 1000
#: Bytes of a report body: 1,000 records of a few hundred bytes each, with room.
MAX_BODY_BYTES = 1024 * 1024
#: How old a reported usage may be: it counts against its own UTC day's quota.
MAX_AGE_SECONDS = 7 * 86_400
#: The operation reported usage is metered under.
OPERATION = "UsageReport"
_FIELDS = ("model", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "request_id",
           "timestamp", "request_metadata")
#: Bedrock's own bounds of `requestMetadata`: up to 16 pairs, keys and values of 1 to 256 characters.
_METADATA_PAIRS, _METADATA_CHARS = 16, 256
_REQUIRED = ("model", "input_tokens", "output_tokens", "request_id")
_MAX_TOKENS = 10**10
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
_CLAIMS_AT_ONCE = 32


@dataclass(frozen=True, slots=True)
class _Record:
    model: str
    requested: str
    usage: Usage
    request_id: str
    timestamp: float
    #: Its `request_metadata` (cost attribution tags, as Converse's `requestMetadata`).
    metadata: dict[str, str]


def _error(error: BedrockError) -> Response:
    status, headers, body = error_parts(error, new_request_id())
    return Response(body, status_code=status,
                     headers={name.decode(): value.decode() for name, value in headers if name != b"content-length"})


def _json(document: dict[str, Any]) -> Response:
    return Response(json.dumps(document, separators=(",", ":")), media_type="application/json")


def _prices(keeper: CostKeeper, model: str) -> dict[str, Any] | None:
    """The base prices of `model` in USD per 1M tokens (pico-USD per token ÷ 10⁶) and
    exact pico-USD per token; None when unpriced."""
    price = keeper.prices.price_of(model)
    if price is None:
        return None
    rates = {"input": price.input, "output": price.output, "cache_read": price.cache_read,
             "cache_write": price.cache_write}
    return {"per_million_tokens_usd": {name: value / 10**6 for name, value in rates.items()},
            "per_token_pico_usd": rates}


def _timestamp(value: Any, now: float, where: str) -> float:
    if value is None:
        return now
    if isinstance(value, bool):
        raise ValidationException(f"{where}timestamp: expected ISO 8601 (2024-01-20T14:35:00Z) or epoch seconds")
    if isinstance(value, (int, float)):
        stamp = float(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationException(f"{where}timestamp: {value[:40]!r} is not ISO 8601 "
                                      "(2024-01-20T14:35:00Z)") from None
        if parsed.tzinfo is None:
            raise ValidationException(f"{where}timestamp: give a time zone (…Z for UTC)")
        stamp = parsed.timestamp()
    else:
        raise ValidationException(f"{where}timestamp: expected ISO 8601 (2024-01-20T14:35:00Z) or epoch seconds")
    if not math.isfinite(stamp) or stamp > now + 300:
        raise ValidationException(f"{where}timestamp: is in the future")
    if stamp < now - MAX_AGE_SECONDS:
        raise ValidationException(f"{where}timestamp: older than {MAX_AGE_SECONDS // 86_400} days; "
                                  "report usage within a week")
    return stamp


def _record(keeper: CostKeeper, raw: Any, now: float, where: str) -> _Record:
    """One report record, checked; raises ValidationException naming the field."""
    if not isinstance(raw, dict):
        raise ValidationException(f"{where}expected a JSON object")
    if any("cost" in str(key) for key in raw):
        raise ValidationException(f"{where}a report carries no cost: Cost Keeper prices the tokens itself")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise ValidationException(f"{where}unknown field(s) {unknown}; expected {list(_FIELDS)}")
    missing = [name for name in _REQUIRED if raw.get(name) is None]
    if missing:
        raise ValidationException(f"{where}missing field(s) {missing}")
    counts = {}
    for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        value = raw.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TOKENS:
            raise ValidationException(f"{where}{name}: expected an integer from 0 to {_MAX_TOKENS}, got {value!r}")
        counts[name] = value
    request_id = raw["request_id"]
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        raise ValidationException(f"{where}request_id: expected 1 to 128 printable ASCII characters without spaces")
    requested = raw["model"]
    if not isinstance(requested, str) or not 0 < len(requested) <= 2048:
        raise ValidationException(f"{where}model: expected a model id or label")
    model = keeper.config.policies.resolve_model(requested)
    if keeper.prices.price_of(model) is None:
        raise ValidationException(f"{where}model: {model[:200]!r} has no price in this proxy's pricing, so its "
                                  "cost cannot be counted; report the model id Bedrock served")
    usage = Usage(input_tokens=counts["input_tokens"], output_tokens=counts["output_tokens"],
                  cache_read_tokens=counts["cache_read_tokens"], cache_write_tokens=counts["cache_write_tokens"])
    return _Record(model, requested, usage, request_id, _timestamp(raw.get("timestamp"), now, where),
                   _metadata(raw.get("request_metadata"), where))


def _metadata(raw: Any, where: str) -> dict[str, str]:
    """`request_metadata`, checked as Bedrock checks Converse's `requestMetadata`."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > _METADATA_PAIRS or not all(
            isinstance(key, str) and isinstance(value, str) and 0 < len(key) <= _METADATA_CHARS
            and 0 < len(value) <= _METADATA_CHARS for key, value in raw.items()):
        raise ValidationException(f"{where}request_metadata: expected up to {_METADATA_PAIRS} string pairs of 1 to "
                                  f"{_METADATA_CHARS} characters each")
    return raw


def client_routes(keeper: CostKeeper) -> list[HttpRoute]:
    store = keeper.store

    async def identify(request: Request, body: bytes) -> Caller:
        scope = request.scope
        return await keeper.authenticator.identify(
            method=request.method, raw_path=scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
            raw_query=scope.get("query_string", b"").decode("latin-1"), headers=scope["headers"],
            authorization=request.headers.get("authorization"), host=request.headers.get("host", ""),
            body=body, secure=request.url.scheme == "https",
        )

    async def authenticated(request: Request, body: bytes) -> Caller | Response:
        try:
            return await identify(request, body)
        except AuthRefused as refused:
            keeper._on_refused(refused, request.scope, new_request_id())
            return _error(refused.error)
        except BedrockError as error:  # the key store is out of reach
            return _error(error)

    async def select(request: Request) -> Response:
        caller = await authenticated(request, b"")
        if isinstance(caller, Response):
            return caller
        label = request.query_params.get("label") or request.query_params.get("model")
        if not label:
            return _error(ValidationException("label is required: GET /v1/select?label=<label or model id>"))
        requested = keeper.config.policies.resolve_model(label)
        policy = keeper.admission.caller_policy(caller)
        chain, _ = policy.chain_from(requested)
        if not any(policy.allows(model) for model in chain):
            return _error(ValidationException(f"This application may not use {label[:200]!r} (allowed_models)."))
        try:  # spent: 400, as the proxy answers; quota state unreadable: the org's fail-open/closed rule
            choice = await keeper.admission.current_choice(ModelRoute(Operation.CONVERSE, label), caller, strict=True)
        except BedrockError as error:
            return _error(error)
        if choice is None:
            return _error(ServiceQuotaExceededException(
                f"No model of the chain of {label[:200]!r} is under its daily quota for scope "
                f"'{policy.scope_key}' now. Quotas reset at 00:00 UTC."))
        model, fallback, mode = choice
        return _json({"label": label, "requested_model": requested, "model": model, "fallback": fallback,
                      "mode": mode, "scope": policy.scope_key, "org": caller.org, "app": caller.app,
                      "prices": _prices(keeper, model)})

    async def read_body(request: Request) -> bytes | Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _error(ValidationException(f"A report body is at most {MAX_BODY_BYTES} bytes; send batches "
                                              f"of at most {MAX_RECORDS} records."))
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return _error(ValidationException(f"A report body is at most {MAX_BODY_BYTES} bytes."))
            chunks.append(chunk)
        return b"".join(chunks)

    def parse(body: bytes) -> list[_Record]:
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValidationException("The body is not JSON.") from None
        now = time.time()
        if isinstance(document, dict) and "records" in document:
            if set(document) != {"records"}:
                raise ValidationException("A batch is {\"records\": [...]} and nothing else.")
            raws = document["records"]
            if not isinstance(raws, list) or not 1 <= len(raws) <= MAX_RECORDS:
                raise ValidationException(f"records: expected a list of 1 to {MAX_RECORDS} records")
            records = [_record(keeper, raw, now, f"records[{index}].") for index, raw in enumerate(raws)]
        else:
            records = [_record(keeper, document, now, "")]
        ids = [record.request_id for record in records]
        if len(set(ids)) != len(ids):
            raise ValidationException("records: a request_id appears twice in this batch")
        return records

    async def hold(scope: str, quota_model: str, quota: int, event: UsageEvent) -> Selection | None:
        """Charge `event` to this process's budget lease like a proxied request, so a
        replica's slice shrinks by it at once. What no lease can hold (the quota is spent,
        or the store is out of reach) is still recorded — it was spent — and reaches the
        scope's committed spend with the next flush."""
        selector = keeper.selector
        try:
            held = await selector.reserve(scope, event.day, event.model, quota_model, quota, event.cost_pico_usd)
            if held is None:
                # More than fits what is left: it drains this process's slice, so no
                # later request is admitted against budget the report already spent.
                free = selector.leases.held().get((scope, event.day, quota_model), (0, 0))[0]
                if free > 0:
                    held = await selector.reserve(scope, event.day, event.model, quota_model, quota, free)
        except Exception:  # noqa: BLE001 - the store is unreachable: recorded without a lease
            return None
        return held

    async def record(caller: Caller, item: _Record, report_id: str) -> dict[str, Any]:
        """Hold the budget, claim the id, record: in that order, so that nothing awaits
        between the claim and the journal. A claimed id answers "duplicate" from then on
        (across restarts, on either store), so a crash in between would lose the report."""
        policy = keeper.admission.caller_policy(caller)
        entry = policy.quota_entry(item.model)
        quota_model = entry[0] if entry is not None else policy.quota_key(item.model)
        scope = policy.scope_key if entry is not None else ""
        event = UsageEvent.from_usage(
            item.usage, keeper.prices, request_id=report_id, timestamp=item.timestamp, org=caller.org,
            app=caller.app, operation=OPERATION, requested_model=item.requested, model=item.model,
            latency_ms=0.0, status=200, quota_scope=scope, quota_model=quota_model,
            tags=TagReader(keeper.config.attribution.request_metadata_keys).read(
                (), {"requestMetadata": item.metadata}),
        )
        held = await hold(scope, quota_model, entry[1], event) if entry is not None and event.cost_pico_usd else None
        try:
            new = await store.claim_report(report_id)
        except BaseException:
            if held is not None:
                keeper.selector.release(held)
            raise
        if not new:
            if held is not None:
                keeper.selector.release(held)
            return {"request_id": item.request_id, "status": "duplicate"}
        # No await from here to the journal.
        if held is not None and not held.unchecked:
            reserved, lease = keeper.selector.settle(held, event.cost_pico_usd)
            event = dataclasses.replace(event, reserved_pico_usd=reserved, lease=lease)
        keeper.recorder.record(event)
        keeper._observe(event, False)
        return {"request_id": item.request_id, "status": "recorded", "model": item.model,
                **usd_fields("cost", event.cost_pico_usd), "quota_scope": scope or None}

    async def usage_reports(request: Request) -> Response:
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        caller = await authenticated(request, body)
        if isinstance(caller, Response):
            return caller
        try:
            records = parse(body)
        except ValidationException as error:
            return _error(error)
        prefix = f"report:{caller.org}/{caller.app}:"
        gate = asyncio.Semaphore(_CLAIMS_AT_ONCE)

        async def recorded(item: _Record) -> dict[str, Any]:
            async with gate:
                return await record(caller, item, prefix + item.request_id)

        # Each record stands alone: a claimed id is recorded whatever happens to the others.
        outcomes = await asyncio.gather(*(recorded(item) for item in records), return_exceptions=True)
        results = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
        failed = len(records) - len(results)
        if failed:  # the store was out of reach for some: the same request again is safe
            return _error(ServiceUnavailableException(
                f"{failed} of {len(records)} reports could not be checked against earlier ones (the usage store "
                "is unavailable); the others are recorded. Send the same request again: recorded reports "
                "answer as duplicates."))
        recorded_count = sum(result["status"] == "recorded" for result in results)
        return _json({"recorded": recorded_count, "duplicates": len(results) - recorded_count, "records": results})

    return [HttpRoute("/v1/select", select, methods=["GET"]),
            HttpRoute("/v1/usage-reports", usage_reports, methods=["POST"])]

