"""Assemble the running proxy from the Config: one object owns every part.

`create_app(config)` gives the data-port ASGI app (Bedrock Runtime API);
`create_admin_app(keeper)` the admin port (`/healthz`, `/readyz`). Both share
one `CostKeeper`, whose `startup`/`shutdown` the data app's lifespan calls
(proxy/data_app.py).
"""

from __future__ import annotations

import hmac
import logging
import time

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from metering.consolidate import Consolidator
from metering.dynamodb_store import DynamoDBStore
from metering.events import UsageEvent, utc_day
from metering.leases import BudgetLeases
from metering.pricing import PriceTable
from metering.quotas import QuotaSelector
from metering.recorder import UsageRecorder
from metering.secret_box import SecretKeyError
from metering.secret_keys import key_source
from metering.sqlite_store import SQLiteStore
from metering.store import parse_scope
from metering.unit_prices import UnitPrices
from proxy.admission import Admission
from proxy.alerts import Alerter
from proxy.auth_failures import FailureTally
from proxy.config import Config
from proxy.dashboard import dashboard_route
from proxy.data_app import DataApp
from proxy.eventlog import EventLog, refusal_record
from proxy.forward import ProxyHandler
from proxy.identity import Authenticator, AuthRefused
from proxy.jobs import Jobs
from proxy.metrics import ProxyMetrics
from proxy.ratelimit import RateLimiter
from proxy.upstream import Upstream
from proxy.usage_api import usage_routes
from proxy.whole_body import WholeBodyOperations

__all__ = ["CostKeeper", "create_app", "create_admin_app", "create_store"]

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
        )
    return SQLiteStore(store.path, key_source=secrets)


class CostKeeper:
    """The proxy's long-lived parts, built once from the Config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = create_store(config)
        self.prices = PriceTable(config.pricing, config.policies.profiles)
        self.unit_prices = UnitPrices(config.unit_pricing, config.policies.profiles)
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
        self.upstream = Upstream(config)
        self.selector = QuotaSelector(self.leases, on_unchecked=self.metrics.on_unchecked)
        self.admission = Admission(config.policies, self.selector, self.prices, RateLimiter(),
                                   on_quota_use=self.metrics.set_quota_use,
                                   unit_prices=self.unit_prices)
        self.event_log = EventLog(access=config.observability.access_log, emf=config.observability.emf)
        #: Refused credentials by access key id and reason, for the dashboard (bounded).
        self.auth_failures = FailureTally()
        self.alerter = Alerter(config.alerts, config.policies, self.store)
        self.handler = ProxyHandler(
            authenticator=self.authenticator,
            admission=self.admission,
            upstream=self.upstream,
            recorder=self.recorder,
            prices=self.prices,
            limits=config.limits,
            observe=self._observe,
            whole_body=WholeBodyOperations(
                upstream=self.upstream, jobs=Jobs(self.store, self.unit_prices), admission=self.admission,
                recorder=self.recorder, unit_prices=self.unit_prices,
                max_body_bytes=config.limits.max_usage_body_bytes, observe=self._observe,
            ),
            on_refused=self._on_refused,
        )
        #: DynamoDB only: one replica at a time sums the counter shards into daily totals.
        self.consolidator = (
            Consolidator(self.store, config.store.consolidation_interval)
            if isinstance(self.store, DynamoDBStore) else None
        )
        self.started = False

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
        self.started = True

    async def shutdown(self) -> None:
        """Flush what was metered, then let go of the upstream and the store."""
        self.started = False
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
    return DataApp(keeper.handler, keeper.startup, keeper.shutdown)


def create_admin_app(keeper: CostKeeper) -> Starlette:
    """The admin port: health, readiness and metrics (open unless configured
    otherwise), and everything that reveals usage behind `COSTKEEPER_ADMIN_TOKEN`."""

    def health_allowed(request: Request) -> bool:
        return keeper.config.observability.healthz_public or admin_authorized(keeper.config, request)

    async def healthz(request: Request) -> Response:
        if not health_allowed(request):
            return JSONResponse({"message": "A valid admin token is required."}, status_code=401)
        return PlainTextResponse("ok\n")

    async def metrics(request: Request) -> Response:
        if not keeper.config.observability.metrics_public and not admin_authorized(keeper.config, request):
            return JSONResponse({"message": "A valid admin token is required."}, status_code=401)
        keeper.metrics.inflight_bodies.set(keeper.handler.inflight_body_bytes)  # read at scrape: nothing per request
        keeper.budget_gauges()
        return Response(keeper.metrics.exposition(keeper.recorder.backlog), media_type=CONTENT_TYPE_LATEST)

    async def readyz(request: Request) -> JSONResponse:
        if not health_allowed(request):
            return JSONResponse({"message": "A valid admin token is required."}, status_code=401)
        ready, checks = keeper.readiness()
        return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)

    return Starlette(routes=[
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics), dashboard_route(),
        *usage_routes(keeper, lambda request: admin_authorized(keeper.config, request)),
    ])


def admin_authorized(config: Config, request: Request) -> bool:
    """`Authorization: Bearer <COSTKEEPER_ADMIN_TOKEN>`; no token configured → nothing is authorized."""
    if not config.admin_token:
        return False
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), config.admin_token.encode())
