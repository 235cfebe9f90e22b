"""Runtime quota overrides on the proxy side: checked, applied, refreshed, audited.

`new_override` turns `costkeeper quota set` / `PUT /v1/quotas/overrides` input into
a `QuotaOverride` (a label resolved to its model id, the model priced, the org's
quota scope respected, the day not past). `OverrideRefresher` reads every override
from the store every `quotas.overrides_refresh` seconds, in the background (never on a
request's path), and hands those in force today to the CostKeeper, which runs them
from the next request (proxy/app.py). `grown_quotas` tells which (scope, model)
quotas grew with a change, so their sticky exhausted marks are dropped and a scope
that had fallen back returns to its first model: the budget really changed.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable, Iterable
from types import MappingProxyType
from typing import Any

from metering.background import BackgroundTask
from metering.events import utc_day
from metering.money import daily_quota_pico
from metering.overrides import ActiveOverrides, OverrideStore, QuotaOverride, active_overrides
from metering.pricing import PriceTable
from proxy.policies import Policies

__all__ = ["OverrideRefresher", "new_override", "with_overrides", "grown_quotas", "OverrideError"]

logger = logging.getLogger(__name__)


class OverrideError(ValueError):
    """An override that cannot be set; the message says why."""


def new_override(policies: Policies, prices: PriceTable, *, org: str, app: str | None, model: str, usd: Any,
                 day: str | None, set_by: str, now: float) -> QuotaOverride:
    if not org:
        raise OverrideError("org is required")
    resolved = policies.resolve_model(model)
    if "." not in resolved and ":" not in resolved:
        raise OverrideError(f"unknown label {model!r}; labels are {sorted(policies.labels)}")
    if prices.price_of(resolved) is None:
        raise OverrideError(f"model {resolved} has no price in `pricing`: its spend could not be counted")
    org_policy = policies.orgs.get(org)
    if app and (org_policy is None or org_policy.scope == "ORG"):
        raise OverrideError(f"org {org} keeps one quota for all its apps (quota_scope ORG): set it without an app")
    if isinstance(usd, bool) or not isinstance(usd, int | float | str):
        raise OverrideError(f"usd: expected a number of USD, got {usd!r}")
    try:
        amount = float(usd)
        if amount < 0:
            raise ValueError(f"usd: expected a non-negative number of USD, got {usd!r}")
        pico = daily_quota_pico(amount, "usd")
    except ValueError as exc:
        raise OverrideError(str(exc)) from None
    today = utc_day(now)
    if day:
        try:
            datetime.date.fromisoformat(day)
        except ValueError:
            raise OverrideError(f"day: expected YYYY-MM-DD, got {day!r}") from None
        if len(day) != 10 or day < today:
            raise OverrideError(f"day: {day} is not today ({today}) or later (UTC)")
    return QuotaOverride(org, app or "", resolved, day or "", pico, set_by, now)


def with_overrides(policies: Policies, active: ActiveOverrides) -> Policies:
    """`policies` with the overrides in force (they win over config.yaml's quotas)."""
    from dataclasses import replace

    table = {scope: MappingProxyType({model: (o.quota_pico_usd, o.set_by) for model, o in models.items()})
             for scope, models in active.items()}
    return replace(policies, overrides=MappingProxyType(table))


def grown_quotas(old: Policies, new: Policies, callers: Iterable[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(org, scope key, model) whose daily quota is higher under `new` (or gone: no limit)
    for the given callers (org, app; app "" for the org)."""
    grown = []
    for org, app in callers:
        before, after = old.for_caller(org, app), new.for_caller(org, app)
        for model, quota in before.daily_quota.items():
            now = after.daily_quota.get(model)
            if now is None or now > quota:
                grown.append((org, after.scope_key, model))
    return sorted(set(grown))


def callers_of(*policies: Policies) -> set[tuple[str, str]]:
    """Every (org, app) that configuration or overrides name: the scopes a change can grow."""
    callers: set[tuple[str, str]] = set()
    for policy in policies:
        for org, org_policy in policy.orgs.items():
            callers.add((org, ""))
            callers.update((org, app) for app in org_policy.apps)
        callers.update(policy.overrides)
    return callers


class OverrideRefresher:
    """Reads the stored overrides every `interval()` seconds; `apply` gets those in force
    today whenever they differ from the last ones."""

    def __init__(self, store: OverrideStore, interval: Callable[[], float],
                 apply: Callable[[ActiveOverrides], Awaitable[None]], clock: Callable[[], float]) -> None:
        self._store = store
        self._interval = interval
        self._apply = apply
        self._clock = clock
        self._active: ActiveOverrides = MappingProxyType({})
        self._background = BackgroundTask("costkeeper-quota-overrides")
        self._failing = False

    def start(self) -> None:
        self._background.start(self._run())

    async def stop(self) -> None:
        await self._background.stop()

    async def refresh(self) -> None:
        overrides = await self._store.quota_overrides()
        active = active_overrides(overrides, utc_day(self._clock()))
        if active != self._active:
            self._active = active
            await self._apply(active)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
                if self._failing:
                    logger.info("quota overrides read again from the store")
                self._failing = False
            except Exception as exc:  # the last overrides stay in force; the next round retries
                if not self._failing:
                    logger.warning("cannot read the quota overrides (%s); the last ones stay in force",
                                   type(exc).__name__)
                self._failing = True
            await asyncio.sleep(self._interval())
