"""Spend alerts: a quota threshold or the hourly cost crossed → webhook POST and a JSON log line.

Two kinds, each sent once per UTC day by this process:

* `quota`: the spend of a (quota scope, model) reaches a share of its daily quota
  (`alerts.thresholds`, default 80 % and 100 %). A model marked exhausted for the
  scope counts as 100 % (admission by worst case stops short of the quota).
* `hourly_cost`: the cost of the last 60 minutes of this process's traffic, all
  orgs together, reaches `alerts.hourly_cost_usd`.

Nothing here runs on the request path beyond noting the event (`observe`): a
background task reads the settled spend from the store (all replicas), and a
second one POSTs queued alerts with a timeout and a few retries. A webhook that
is down costs a warning in the log, never a request. With several replicas each
may send its own copy of an alert (dedupe is per process).

Payloads are Slack-compatible (`text`) plus structured fields; they carry scope,
model, amounts and ratios only — never a credential or the webhook URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from metering.budget import LeaseStore
from metering.events import UsageEvent, utc_day
from metering.money import PICO_PER_USD
from proxy.config import AlertsConfig
from proxy.eventlog import json_lines_logger
from proxy.policies import Policies

__all__ = ["Alerter"]

logger = logging.getLogger(__name__)

#: A scope/model is re-checked this long after its last event: the spend reaches
#: the store only when the metering pipeline flushes.
_RECHECK_SECONDS = 30.0
#: Alerts waiting for the webhook beyond this are dropped (logged), not queued forever.
_MAX_QUEUED = 1000


def _alert_log() -> logging.Logger:
    """Bare JSON lines on stdout (as the access log): shippers parse them as JSON."""
    return json_lines_logger("costkeeper.alerts")


class Alerter:
    def __init__(
        self,
        config: AlertsConfig,
        policies: Policies,
        store: LeaseStore,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = config
        self._policies = policies
        self._store = store
        self._clock = clock
        self._transport = transport
        #: (scope, org, app, model) → last event time; checked until `_RECHECK_SECONDS` after it.
        self._active: dict[tuple[str, str, str, str], float] = {}
        #: minute index → pico-USD observed in it (the last hour is kept).
        self._minutes: dict[int, int] = {}
        #: (day, kind, scope, model, threshold) of alerts already raised.
        self._raised: set[tuple[str, str, str, str, float]] = set()
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_MAX_QUEUED)
        self._tasks: list[asyncio.Task[None]] = []
        self._log = _alert_log()

    @property
    def enabled(self) -> bool:
        return bool(self._config.thresholds) or self._config.hourly_cost_usd is not None

    def observe(self, event: UsageEvent) -> None:
        """Note a metered request (hot path: two dict writes)."""
        if event.quota_scope and self._config.thresholds:
            self._active[(event.quota_scope, event.org, event.app, event.quota_key)] = event.timestamp
        if self._config.hourly_cost_usd is not None and event.cost_pico_usd:
            minute = int(event.timestamp // 60)
            self._minutes[minute] = self._minutes.get(minute, 0) + event.cost_pico_usd

    def reconfigure(self, config: AlertsConfig, policies: Policies) -> None:
        """A config reload's thresholds, webhook and quotas, from the next check on
        (the alerts already raised today are not raised again); `start` again to
        begin checking if alerts were off."""
        self._config = config
        self._policies = policies

    async def start(self) -> None:
        if self.enabled and not self._tasks:
            self._tasks = [asyncio.create_task(self._check_loop()), asyncio.create_task(self._send_loop())]

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Check once more, give queued alerts `drain_timeout` seconds, then stop."""
        if not self._tasks:
            return
        checker, sender = self._tasks
        checker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await checker
        with contextlib.suppress(Exception):
            await self.check()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), drain_timeout)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        self._tasks = []

    async def check(self) -> list[dict[str, Any]]:
        """One pass over the active scopes and the hourly cost; the alerts raised now."""
        now = self._clock()
        day = utc_day(now)
        raised = []
        for old in [k for k in self._raised if k[0] != day]:
            self._raised.discard(old)
        for key, last_seen in list(self._active.items()):
            if now - last_seen > _RECHECK_SECONDS or utc_day(last_seen) != day:
                self._active.pop(key, None)
                continue
            raised.extend(await self._check_quota(*key, day))
        raised.extend(self._check_hourly(now, day))
        for alert in raised:
            self._emit(alert)
        return raised

    async def _check_quota(self, scope: str, org: str, app: str, model: str, day: str) -> list[dict[str, Any]]:
        quota = self._policies.for_caller(org, app).quota_of(model)
        pending = [t for t in self._config.thresholds if (day, "quota", scope, model, t) not in self._raised]
        if not quota or not pending:
            return []
        budget = await self._store.read_budget(scope, day)
        spent = budget.model(model).spent
        ratio = spent / quota
        if pending[-1] >= 1.0 > ratio and model in budget.exhausted:
            ratio = 1.0
        alerts = []
        for threshold in pending:
            if ratio >= threshold:
                self._raised.add((day, "quota", scope, model, threshold))
                alerts.append(_quota_alert(scope, model, day, threshold, spent, quota, ratio))
        return alerts

    def _check_hourly(self, now: float, day: str) -> list[dict[str, Any]]:
        limit = self._config.hourly_cost_usd
        if limit is None:
            return []
        current = int(now // 60)
        for minute in [m for m in self._minutes if m <= current - 60]:
            del self._minutes[minute]
        key = (day, "hourly_cost", "*", "*", limit)
        cost = sum(self._minutes.values()) / PICO_PER_USD
        if cost < limit or key in self._raised:
            return []
        self._raised.add(key)
        return [{
            "text": f":warning: Cost Keeper: ${cost:,.2f} spent in the last hour (threshold ${limit:,.2f}).",
            "type": "alert", "kind": "hourly_cost", "day": day, "cost_usd": round(cost, 6),
            "threshold_usd": limit, "time": _iso(now),
        }]

    def _emit(self, alert: dict[str, Any]) -> None:
        self._log.warning(json.dumps(alert, separators=(",", ":")))
        if self._config.webhook_url is None:
            return
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            logger.warning("alert webhook backlog full; dropped a %s alert", alert["kind"])

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.check_interval)
            try:
                await self.check()
            except Exception as exc:  # a store hiccup delays alerts; the next pass retries
                logger.warning("alert check failed: %s", exc)

    async def _send_loop(self) -> None:
        async with httpx.AsyncClient(timeout=self._config.timeout, transport=self._transport) as client:
            while True:
                alert = await self._queue.get()
                try:
                    await self._post(client, alert)
                finally:
                    self._queue.task_done()

    async def _post(self, client: httpx.AsyncClient, alert: dict[str, Any]) -> None:
        url = self._config.webhook_url
        assert url is not None
        for attempt in range(self._config.retries + 1):
            try:
                response = await client.post(url, json=alert)
                if response.status_code < 300:
                    return
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            if attempt < self._config.retries:
                await asyncio.sleep(0.5 * 2**attempt)
        # The URL is not logged: Slack-style webhook URLs are credentials.
        logger.warning("alert webhook failed after %d attempt(s) (%s); %s alert not delivered",
                       self._config.retries + 1, problem, alert["kind"])


def _quota_alert(scope: str, model: str, day: str, threshold: float, spent: int, quota: int,
                 ratio: float) -> dict[str, Any]:
    return {
        "text": (f":warning: Cost Keeper: scope `{scope}` reached {threshold:.0%} of its daily quota on "
                 f"`{model}` (${spent / PICO_PER_USD:,.2f} of ${quota / PICO_PER_USD:,.2f}, {day} UTC)."),
        "type": "alert", "kind": "quota", "scope": scope, "model": model, "day": day,
        "threshold": threshold, "ratio": round(ratio, 4), "spent_usd": spent / PICO_PER_USD,
        "quota_usd": quota / PICO_PER_USD,
    }


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
