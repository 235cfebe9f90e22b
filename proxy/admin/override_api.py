"""`/v1/quotas/overrides` on the admin port: runtime quota overrides (proxy/admin/overrides.py).

    GET     → {"overrides": [...]}: every stored override, with `quota_usd`
    PUT     {"org", "app"?, "label"|"model", "usd", "day"?} → the override, and the one it replaced
    DELETE  ?org=&app=&model=|label=&day= → the removed override (404 if there was none)

Admin token only. A change is written to the store (shared by every replica, which
apply it within `quotas.overrides_refresh`), applied on this replica at once, and logged as a
`quota_override` event-log line with who made it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from metering.money import usd_fields
from metering.overrides import QuotaOverride
from proxy.admin.overrides import OverrideError, new_override
from proxy.eventlog import quota_change_record

if TYPE_CHECKING:
    from proxy.app import CostKeeper

__all__ = ["override_routes", "override_json"]

#: Who an admin-API change is logged as: the admin token (there is one, unnamed).
ADMIN_WHO = "admin-token"


def override_json(override: QuotaOverride | None) -> dict[str, object] | None:
    if override is None:
        return None
    return {**override.as_dict(), **usd_fields("quota", override.quota_pico_usd)}


def override_routes(keeper: CostKeeper, authorized: Callable[[Request], bool]) -> list[Route]:
    async def overrides(request: Request) -> JSONResponse:
        if not authorized(request):
            return JSONResponse({"message": "A valid admin token is required."}, status_code=401)
        try:
            if request.method == "GET":
                return JSONResponse({"overrides": [override_json(o) for o in await keeper.store.quota_overrides()]})
            if request.method == "PUT":
                return await _put(request)
            return await _delete(request)
        except OverrideError as exc:
            return JSONResponse({"message": str(exc)}, status_code=400)

    async def _put(request: Request) -> JSONResponse:
        try:
            body: Any = json.loads(await request.body())
        except ValueError:
            raise OverrideError("expected a JSON object") from None
        if not isinstance(body, dict):
            raise OverrideError("expected a JSON object")
        unknown = set(body) - {"org", "app", "label", "model", "usd", "day"}
        if unknown:
            raise OverrideError(f"unknown field(s) {sorted(unknown)}")
        override = new_override(keeper.policies, keeper.prices, org=str(body.get("org") or ""),
                                app=body.get("app") or None, model=_model(body), usd=body.get("usd"),
                                day=body.get("day") or None, set_by=ADMIN_WHO, now=time.time())
        old = await keeper.store.put_quota_override(override)
        _audit(keeper, "set", override, old, override)
        await keeper.overrides.refresh()
        return JSONResponse({"override": override_json(override), "replaced": override_json(old)})

    async def _delete(request: Request) -> JSONResponse:
        params = dict(request.query_params)
        org, app, day = params.get("org", ""), params.get("app", ""), params.get("day", "")
        model = keeper.policies.resolve_model(_model(params))
        old = await keeper.store.delete_quota_override(org, app, model, day)
        if old is None:
            return JSONResponse({"message": f"No override for org {org!r}, app {app!r}, model {model}, "
                                            f"day {day or '(none)'}."}, status_code=404)
        _audit(keeper, "unset", old, old, None)
        await keeper.overrides.refresh()
        return JSONResponse({"removed": override_json(old)})

    return [Route("/v1/quotas/overrides", overrides, methods=["GET", "PUT", "DELETE"])]


def _model(fields: dict[str, Any]) -> str:
    model = fields.get("model") or fields.get("label")
    if not model or (fields.get("model") and fields.get("label")):
        raise OverrideError("give one of label or model")
    return str(model)


def _audit(keeper: CostKeeper, action: str, what: QuotaOverride, old: QuotaOverride | None,
           new: QuotaOverride | None) -> None:
    keeper.event_log.write_change(quota_change_record(
        action=action, who=ADMIN_WHO, org=what.org, app=what.app, model=what.model, day=what.day,
        old=None if old is None else old.quota_pico_usd, new=None if new is None else new.quota_pico_usd,
        at=time.time()))
