"""Assemble the running proxy from the Config: one object owns every part.

`create_app(config)` gives the data-port ASGI app (Bedrock Runtime API);
`proxy.admin.app.create_admin_app(keeper)` the admin port. Both share one
`CostKeeper`, whose `startup`/`shutdown` the data app's lifespan calls
(proxy/data_app.py). This module imports none of the admin port's routes: they
read the keeper, so the admin package imports this one, never the reverse.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import MappingProxyType

from starlette.types import Receive, Scope, Send

from metering.consolidate import Consolidator
from metering.dynamodb_store import DynamoDBStore
from metering.events import UsageEvent, utc_day
from metering.leases import BudgetLeases
from metering.overrides import ActiveOverrides
from metering.pricing import PriceTable
from metering.quotas import QuotaSelector
from metering.recorder import UsageRecorder
from metering.secret_box import SecretKeyError
from metering.secret_keys import key_source
from metering.sqlite_store import SQLiteStore
from metering.store import parse_scope
from metering.unit_prices import UnitPrices
from proxy.admin.alerts import Alerter
from proxy.admin.metrics import ProxyMetrics
from proxy.admin.overrides import OverrideRefresher, callers_of, grown_quotas, with_overrides
from proxy.admin.reload import ConfigWatcher
from proxy.admission import Admission
from proxy.auth_failures import FailureTally
from proxy.config import Config
from proxy.data_app import DataApp
from proxy.eventlog import EventLog, refusal_record
from proxy.forward import ProxyHandler
from proxy.identity import Authenticator, AuthRefused
from proxy.inflight import BodyBudget
from proxy.jobs import Jobs
from proxy.policies import Policies
from proxy.ratelimit import RateLimiter
from proxy.response_cache import ResponseCache
from proxy.stream_drain import StreamDrain
from proxy.tags import TagReader
from proxy.upstream import Upstream
from proxy.whole_body import WholeBodyOperations

__all__ = ["CostKeeper", "Runtime", "create_app", "create_store"]

logger = logging.getLogger(__name__)


def create_store(config: Config) -> SQLiteStore | DynamoDBStore:
    """The store `config.store` names, not yet opened (`await store.open()`)."""
    store = config.store
    secrets = key_source(
        secret_key=config.secret_key, previous=config.previous_secret_keys, key_file=store.secret_key_path(),
        kms_key_id=store.kms_key_id, region=store.region or config.region,
        # A single machine creates its key file; replicas must share one made on purpose.
        create_key_file=store.backend == "sqlite",
    )
    if store.backend == "dynamodb":
        return DynamoDBStore(
            table=store.table,
            region=store.region or config.region,
            endpoint_url=store.endpoint_url,
            shards=store.shards,
            max_attempts=store.max_attempts,
            connect_timeout=store.connect_timeout,
            read_timeout=store.read_timeout,
            metrics_ttl_days=store.metrics_ttl_days,
            marker_ttl_days=store.marker_ttl_days,
            key_source=secrets,
            index_name=store.index_name,
            max_tag_values=config.attribution.max_tag_values,
        )
    return SQLiteStore(store.path, key_source=secrets, max_tag_values=config.attribution.max_tag_values)


@dataclass(frozen=True, slots=True)
class Runtime:
    """What one configuration makes of the request path, immutable: a request takes
    the CostKeeper's current runtime once, when it starts, and finishes on it even if
    a reload (proxy/admin/reload.py) swaps in another meanwhile."""

    config: Config
    #: `config.policies` with the runtime quota overrides in force (proxy/admin/overrides.py).
    policies: Policies
    prices: PriceTable
    unit_prices: UnitPrices
    admission: Admission
    handler: ProxyHandler


class CostKeeper:
    """The proxy's long-lived parts, built once from the Config; the parts a config
    reload changes live in `runtime`, rebuilt around the same long-lived state."""

    def __init__(self, config: Config) -> None:
        self.store = create_store(config)
        self.metrics = ProxyMetrics(config.observability.max_model_labels)
        self.metrics.watch_store(self.store.stats)
        #: This process's budget leases: quotas hold however many replicas and workers share them.
        self.leases = BudgetLeases(self.store, ttl=config.policies.quotas.lease_ttl,
                                   on_write=self.metrics.on_lease_write)
        metering = config.metering
        self.recorder = UsageRecorder(
            self.store,
            config.store.journal_path(),
            flush_interval=metering.flush_interval,
            batch_size=metering.batch_size,
            fsync_interval=metering.fsync_interval,
            retry_base=config.store.retry_base,
            max_backoff=config.store.retry_max,
            stats=self.store.stats,
            on_stored=self.leases.on_stored,
        )
        self.authenticator = Authenticator(config.auth, self.store,
                                           frozenset(config.upstream.regions or (config.region,)))
        self.upstream = Upstream(config, on_retry=self.metrics.upstream_retries.inc)
        self.selector = QuotaSelector(self.leases, on_unchecked=self.metrics.on_unchecked)
        #: Kept across reloads: the windows of the rate limits, the cached responses, the body budget.
        self._limiter = RateLimiter()
        self._cache = ResponseCache()
        self._bodies = BodyBudget(config.limits.max_inflight_body_bytes)
        #: Open bidirectional streams, cut `server.stream_drain_timeout` after a SIGTERM (`stop()`).
        self.drain = StreamDrain()
        observability = config.observability
        self.event_log = EventLog(access=observability.access_log, emf=observability.emf,
                                  emf_namespace=observability.emf_namespace,
                                  emf_dimensions=observability.emf_dimensions)
        #: Refused credentials by access key id and reason, for the dashboard (bounded).
        self.auth_failures = FailureTally()
        #: Runtime quota overrides in force today, read from the store in the background.
        self._overrides: ActiveOverrides = MappingProxyType({})
        self.overrides = OverrideRefresher(self.store, lambda: self.config.policies.quotas.overrides_refresh,
                                           self.apply_overrides, time.time)
        self.alerter = Alerter(config.alerts, config.policies, self.store)
        self.runtime = self._build_runtime(config)
        self.metrics.config_info.labels(config.source.sha256).set(1)
        #: DynamoDB only: one replica at a time sums the counter shards into daily totals.
        self.consolidator = (
            Consolidator(self.store, config.store.consolidation_interval)
            if isinstance(self.store, DynamoDBStore) else None
        )
        self.watcher = ConfigWatcher(lambda: self.config, self.reload, self._on_reload_error)
        self.started = False

    def _build_runtime(self, config: Config) -> Runtime:
        policies = with_overrides(config.policies, self._overrides)
        prices = PriceTable(config.pricing, config.policies.profiles)
        unit_prices = UnitPrices(config.unit_pricing, config.policies.profiles)
        admission = Admission(policies, self.selector, prices, self._limiter,
                              on_quota_use=self.metrics.set_quota_use, unit_prices=unit_prices)
        handler = ProxyHandler(
            authenticator=self.authenticator,
            admission=admission,
            upstream=self.upstream,
            recorder=self.recorder,
            prices=prices,
            limits=config.limits,
            observe=self._observe,
            whole_body=WholeBodyOperations(
                upstream=self.upstream, jobs=Jobs(self.store, unit_prices), admission=admission,
                recorder=self.recorder, unit_prices=unit_prices,
                max_body_bytes=config.limits.max_usage_body_bytes, observe=self._observe,
            ),
            cache=self._cache,
            bodies=self._bodies,
            on_refused=self._on_refused,
            tags=TagReader(config.attribution.request_metadata_keys),
            checkpoint_interval=config.metering.checkpoint_interval,
            drain=self.drain,
        )
        return Runtime(config, policies, prices, unit_prices, admission, handler)

    @property
    def config(self) -> Config:
        return self.runtime.config

    @property
    def policies(self) -> Policies:
        """The policies requests run on now: the configuration's, with the quota overrides."""
        return self.runtime.policies

    @property
    def prices(self) -> PriceTable:
        return self.runtime.prices

    @property
    def unit_prices(self) -> UnitPrices:
        return self.runtime.unit_prices

    @property
    def admission(self) -> Admission:
        return self.runtime.admission

    @property
    def handler(self) -> ProxyHandler:
        return self.runtime.handler

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The data port's handler: the request runs on the runtime current when it starts."""
        await self.runtime.handler(scope, receive, send)

    async def reload(self, config: Config) -> None:
        """Run `config` (validated, restart-only settings already kept: proxy/admin/reload.py)
        from the next request on."""
        old = self.runtime.config
        self.store.max_tag_values = config.attribution.max_tag_values
        await self._swap(self._build_runtime(config))
        if old.source.sha256 != config.source.sha256:
            self.metrics.config_info.labels(old.source.sha256).set(0)
        self.metrics.config_info.labels(config.source.sha256).set(1)
        if self.started:
            await self.alerter.start()

    async def apply_overrides(self, active: ActiveOverrides) -> None:
        """Run the quota overrides in force today from the next request (OverrideRefresher)."""
        self._overrides = active
        await self._swap(self._build_runtime(self.config))

    async def _swap(self, runtime: Runtime) -> None:
        old = self.runtime
        self.alerter.reconfigure(runtime.config.alerts, runtime.policies)
        self.runtime = runtime  # one assignment: no request sees half of each
        await self._forget_grown(old.policies, runtime.policies)

    async def _forget_grown(self, old: Policies, new: Policies) -> None:
        """A quota that grew lifts its sticky exhausted mark, here and in the store, so a
        scope that had fallen back returns to its first model. Lowering needs nothing:
        the next selection compares the spend with the new quota."""
        day = utc_day(time.time())
        for _org, scope, model in grown_quotas(old, new, callers_of(old, new)):
            # "org/" is an APP-scoped org's own quota: the default of all its apps.
            def matches(candidate: str, scope: str = scope) -> bool:
                return candidate == scope or (scope.endswith("/") and candidate.startswith(scope))

            scopes = set(self.selector.forget_exhausted(model, matches))
            if not scope.endswith("/"):
                scopes.add(scope)
            try:
                for each in sorted(scopes):
                    await self.store.clear_exhausted(each, day, model)
            except Exception as exc:
                logger.warning("could not clear the exhausted mark of %s for %s (%s)", model, scope,
                               type(exc).__name__)
            self.selector.forget_exhausted(model, matches)  # marks read back meanwhile
            logger.info("the quota of %s on %s grew: its exhausted mark is lifted", scope, model)

    def _on_reload_error(self, message: str) -> None:
        self.metrics.config_reload_errors.inc()

    def _observe(self, event: UsageEvent, fallback: bool) -> None:
        self.metrics.observe(event, fallback)
        self.event_log.write(event, fallback)
        self.alerter.observe(event)

    def _on_refused(self, refused: AuthRefused, scope: Scope, request_id: str) -> None:
        """Every 403: a count by reason, a line in the access log, a row in the tally."""
        reason, caller = refused.reason, refused.caller
        org, app = (caller.org, caller.app) if caller is not None else (None, None)
        self.metrics.auth_failures.labels(reason).inc()
        self.auth_failures.record(refused.access_key_id, reason, org, app)
        client = scope.get("client")
        self.event_log.write_refusal(refusal_record(
            request_id=request_id, status=refused.error.status, error=refused.error.code, reason=reason,
            access_key_id=refused.access_key_id, org=org, app=app, client=client[0] if client else None,
        ))

    async def unlock_secrets(self) -> None:
        """Before the proxy listens (`costkeeper serve`): no key, or a wrong one, for the
        issued secrets raises SecretKeyError; a store or KMS out of reach only warns,
        and the first key lookup tries again. Trust mode reads no secret."""
        if self.config.auth.mode == "trust":
            return
        await self.store.open()
        try:
            logger.info("issued secrets: %s", await self.store.unlock_secrets())
        except SecretKeyError:
            raise
        except Exception as exc:
            logger.warning("issued secrets not unlocked yet (%s); the first key lookup tries again",
                           type(exc).__name__)

    async def startup(self) -> None:
        await self.store.open()
        await self.upstream.start()
        await self.recorder.start()
        await self.leases.start()
        if self.consolidator is not None:
            await self.consolidator.start()
        await self.alerter.start()
        try:
            await self.overrides.refresh()
        except Exception as exc:  # the store may be down at start-up: the refresher tries again
            logger.warning("quota overrides not read yet (%s)", type(exc).__name__)
        self.overrides.start()
        self.watcher.start()
        self.started = True

    async def shutdown(self) -> None:
        """Flush what was metered, then let go of the upstream and the store."""
        self.started = False
        await self.watcher.stop()
        await self.overrides.stop()
        try:
            if self.consolidator is not None:
                await self.consolidator.stop()
            await self.recorder.stop(self.config.metering.drain_timeout)
            # After the flush: settled leases are removed, and every free slice is given back.
            await self.leases.close()
            await self.alerter.stop()
        finally:
            self.event_log.flush()
            await self.upstream.aclose()
            await self.store.aclose()

    def budget_gauges(self) -> None:
        """Today's budget per scope and model, as this process last read it, into /metrics."""
        today = utc_day(time.time())
        for (scope, day), budget in self.leases.views().items():
            if day != today:
                continue
            org, app = parse_scope(scope)
            policy = self.config.policies.for_caller(org, app or "")
            for model, kept in budget.models.items():
                quota = policy.quota_of(model)
                if quota is not None:
                    self.metrics.set_quota_budget(scope, model, kept.spent, kept.leased, quota - kept.committed)

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready while started, the upstream is usable and the metering backlog
        is below `metering.max_backlog`. A store outage alone does not make the
        proxy unready (fail-open: the journal keeps the usage), a long one does."""
        backlog = self.recorder.backlog
        backlog_ok = backlog <= self.config.metering.max_backlog
        checks: dict[str, object] = {
            "started": self.started,
            "upstream": self.upstream.ready,
            "metering_backlog": backlog,
            "metering_backlog_ok": backlog_ok,
            "store_healthy": self.recorder.healthy,
        }
        return self.started and self.upstream.ready and backlog_ok, checks


def create_app(config: Config, keeper: CostKeeper | None = None) -> DataApp:
    """Every path goes to the handler, which answers Bedrock-shaped errors itself."""
    keeper = keeper or CostKeeper(config)
    return DataApp(keeper.serve, keeper.startup, keeper.shutdown)
