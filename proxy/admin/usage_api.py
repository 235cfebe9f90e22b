"""The JSON usage API on the admin port: `/v1/usage`, `/v1/quotas`, `/v1/rates`, and
`/v1/auth-failures` (refused credentials of the last hour, proxy/auth_failures.py).

Every endpoint answers 401 `{"message": …}` without `Authorization: Bearer
<COSTKEEPER_ADMIN_TOKEN>` and 400 `{"message": …}` for a bad parameter. Amounts
come three times (`metering.money.usd_fields`): `*_pico_usd`, exact integers of
pico-USD; `*_usd`, a convenience number; and `*_micro_usd`, rounded to whole
micro-USD, kept because readers of the API before issue #16 (when it was exact) may
depend on it. Days are UTC days, the days quotas reset on
(`metering.report.report_since`). `by` may name `base_model` (the model id without
its geo/global prefix or ARN).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.modelid import base_model_id
from metering.events import utc_day, utc_day_and_minute
from metering.money import usd_fields
from metering.report import report_since, total_row
from metering.store import ModelRate, UsageRow, normalize_group_by

if TYPE_CHECKING:
    from proxy.app import CostKeeper

__all__ = ["usage_routes", "cache_efficiency", "fallback_events", "rate_summary"]

_COUNTS = ("requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
           "cost_pico_usd", "estimated_requests", "unpriced_requests")
#: Window of the "recent" rate figures, in minutes (DESIGN.md §6).
_RECENT_MINUTES = 5
_MAX_DAYS = 366
_MAX_MINUTES = 7 * 24 * 60


class _BadParameter(ValueError):
    pass


def cache_efficiency(reads: int, writes: int) -> float | None:
    """cache reads / (cache reads + cache writes); None when nothing touched a cache."""
    return reads / (reads + writes) if reads + writes else None


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fallback_events(chain: Sequence[str], marked: Mapping[str, float | None]) -> list[dict[str, object]]:
    """A scope's fallbacks of the day, oldest first: each model marked exhausted (`from`),
    when (`time`, UTC; None for a mark older than the kept time) and the chain model that
    took over (`to`: the first one after it not yet exhausted then; None once the chain
    was spent, when requests are refused). Marks may be kept under a profile id: a chain
    id matches its base model too."""
    def same(one: str, other: str) -> bool:
        return one == other or base_model_id(one) == base_model_id(other)

    events: list[dict[str, object]] = []
    for model, at in sorted(marked.items(), key=lambda item: (item[1] is not None, item[1] or 0.0, item[0])):
        gone = [other for other, then in marked.items() if then is None or (at is not None and then <= at)]
        position = next((index for index, entry in enumerate(chain) if same(entry, model)), -1)
        to = next((entry for entry in chain[position + 1:] if not any(same(entry, g) for g in gone)), None)
        events.append({"time": _iso(at), "from": model, "to": to})
    return events


def _row(row: UsageRow, groups: Sequence[str]) -> dict[str, object]:
    record: dict[str, object] = {name: row.value(name) for name in groups}
    record.update({name: getattr(row, name) for name in _COUNTS})
    record["total_tokens"] = row.total_tokens
    record.update(usd_fields("cost", row.cost_pico_usd))
    record["cache_efficiency"] = cache_efficiency(row.cache_read_tokens, row.cache_write_tokens)
    return record


def _int_param(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadParameter(f"{name} must be an integer, got {raw!r}") from None
    if not 1 <= value <= maximum:
        raise _BadParameter(f"{name} must be between 1 and {maximum}, got {value}")
    return value


def rate_summary(rates: Sequence[ModelRate], field: str, now: float) -> dict[str, object]:
    """Peak and average of the last `_RECENT_MINUTES` minutes up to `now`'s minute
    (minutes without traffic count as 0), and the peak of the whole window with its minute."""
    current = int(now // 60)
    recent = {f"{day}T{minute}Z" for day, minute in
              (utc_day_and_minute((current - back) * 60) for back in range(_RECENT_MINUTES))}
    values = {f"{rate.day}T{rate.minute}Z": int(getattr(rate, field)) for rate in rates}
    in_recent = [value for stamp, value in values.items() if stamp in recent]
    peak_time = max(values, key=lambda stamp: (values[stamp], stamp), default=None)
    return {
        "recent_peak_5m": max(in_recent, default=0),
        "avg_5m": sum(in_recent) / _RECENT_MINUTES,
        "overall_peak": {"value": values[peak_time] if peak_time else 0, "time": peak_time},
    }


def usage_routes(keeper: CostKeeper, authorized: Callable[[Request], bool]) -> list[Route]:
    store = keeper.store

    def guarded(handler: Callable[[Request], Awaitable[dict[str, object]]]) -> Callable[..., Awaitable[JSONResponse]]:
        async def endpoint(request: Request) -> JSONResponse:
            if not authorized(request):
                return JSONResponse({"message": "A valid admin token is required."}, status_code=401)
            try:
                return JSONResponse(await handler(request))
            except _BadParameter as error:
                return JSONResponse({"message": str(error)}, status_code=400)
        return endpoint

    async def usage(request: Request) -> dict[str, object]:
        days = _int_param(request, "days", 1, _MAX_DAYS)
        by = [name.strip() for name in request.query_params.get("by", "org,app,model").split(",") if name.strip()]
        try:
            groups = normalize_group_by(by)
        except ValueError as error:
            raise _BadParameter(str(error)) from None
        since = report_since(days, time.time())
        rows = await store.usage_summary(since, None, groups)
        return {"days": days, "since": since, "by": list(groups),
                "rows": [_row(row, groups) for row in rows], "total": _row(total_row(rows), ())}

    async def _scopes(day: str) -> list[tuple[str, str | None]]:
        """(org, app) of every quota scope: ORG-scoped orgs, and for APP-scoped orgs
        their configured apps plus any app seen today (they inherit the org's quota)."""
        policies = keeper.policies  # the running ones: a config reload or an override changes them
        scopes: dict[str, tuple[str, str | None]] = {}
        app_scoped = {org for org, policy in policies.orgs.items() if policy.scope == "APP"}
        for org, policy in policies.orgs.items():
            if policy.scope == "ORG":
                scopes[org] = (org, None)
            else:
                scopes.update({f"{org}/{app}": (org, app) for app in policy.apps})
        if app_scoped:
            since = report_since(1, time.time())
            for row in await store.usage_summary(since, None, ("org", "app")):
                if row.org in app_scoped and row.app is not None:
                    scopes.setdefault(f"{row.org}/{row.app}", (row.org, row.app))
        return [scopes[key] for key in sorted(scopes)]

    async def _scope_state(org: str, app: str | None, day: str) -> dict[str, object] | None:
        policies = keeper.policies
        policy = policies.for_caller(org, app or "")
        quotas = dict(policy.daily_quota)
        if not quotas:
            return None
        budget, marked = await asyncio.gather(store.read_budget(policy.scope_key, day),
                                              store.exhaustion_times(policy.scope_key, day))
        now = time.time()
        models = []
        exhausted_bases = {*budget.exhausted, *(base_model_id(model) for model in budget.exhausted)}
        in_chain = [model for model in policy.chain if model in quotas]
        for model in in_chain + sorted(set(quotas) - set(in_chain)):
            quota, base = quotas[model], base_model_id(model)
            # Kept under the quota's configured id; rows an older version kept under the
            # id used (a geo profile) count for their base model too.
            kept = [value for used, value in budget.models.items() if used == model or base_model_id(used) == base]
            spent = sum(value.spent for value in kept)
            leased = sum(value.leased for value in kept)
            remaining = quota - spent - leased
            models.append({
                "model": model, **usd_fields("spend", spent), **usd_fields("leased", leased),
                **usd_fields("remaining", remaining), **usd_fields("quota", quota),
                "ratio": spent / quota if quota else (1.0 if spent else 0.0),
                "holders": sum(value.holders(now) for value in kept),
                # Near the quota (under a tenth of it left to claim) slices shrink to one request.
                "mode": "TIGHT" if remaining * 10 < quota else "NORMAL",
                "exhausted": model in exhausted_bases,
                # Where the quota comes from: config.yaml, or a runtime override and who set it.
                "source": "override" if model in policy.overridden else "config",
                "set_by": policy.overridden.get(model),
            })
        active = next((model for model in policy.chain if model not in exhausted_bases), None)
        return {"scope": policy.scope_key, "org": org, "app": app, "chain": list(policy.chain),
                "active_model": active, "models": models, "fallbacks": fallback_events(policy.chain, marked)}

    async def quotas(_request: Request) -> dict[str, object]:
        day = utc_day(time.time())
        policies = keeper.policies
        states = await asyncio.gather(*(_scope_state(org, app, day) for org, app in await _scopes(day)))
        return {"day": day, "lease_ttl": policies.quotas.lease_ttl,
                "scopes": [state for state in states if state is not None]}

    async def rates(request: Request) -> dict[str, object]:
        model = request.query_params.get("model")
        if not model:
            raise _BadParameter("model is required")
        minutes = _int_param(request, "minutes", 60, _MAX_MINUTES)
        now = time.time()
        since = (int(now // 60) - minutes + 1) * 60
        found = await store.model_rates(model, since, now + 60)
        return {"model": model, "minutes": minutes,
                "series": [{"time": f"{rate.day}T{rate.minute}Z", "tpm": rate.tpm, "rpm": rate.rpm} for rate in found],
                "tpm": rate_summary(found, "tpm", now), "rpm": rate_summary(found, "rpm", now)}

    async def auth_failures(_request: Request) -> dict[str, object]:
        tally = keeper.auth_failures
        rows = [row.as_dict() for row in tally.merged_rows()]
        return {"window_minutes": int(tally.window // 60), "rows": rows, "total": sum(row["count"] for row in rows)}

    return [Route("/v1/usage", guarded(usage)), Route("/v1/quotas", guarded(quotas)),
            Route("/v1/rates", guarded(rates)), Route("/v1/auth-failures", guarded(auth_failures))]
