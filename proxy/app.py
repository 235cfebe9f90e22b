"""Assemble the running proxy from the Config: one object owns every part.

`create_app(config)` gives the data-port ASGI app (Bedrock Runtime API);
`create_admin_app(keeper)` the admin port (`/healthz`, `/readyz`). Both share
one `CostKeeper`, whose `startup`/`shutdown` the data app's lifespan calls.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

from metering.pricing import PriceTable
from metering.quotas import QuotaSelector
from metering.recorder import UsageRecorder
from metering.sqlite_store import SQLiteStore
from proxy.admission import Admission
from proxy.config import Config
from proxy.forward import ProxyHandler
from proxy.identity import Authenticator
from proxy.ratelimit import RateLimiter
from proxy.upstream import Upstream

__all__ = ["CostKeeper", "create_app", "create_admin_app"]

logger = logging.getLogger(__name__)


class CostKeeper:
    """The proxy's long-lived parts, built once from the Config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = SQLiteStore(config.store.path)
        self.prices = PriceTable(config.pricing)
        self.recorder = UsageRecorder(
            self.store, flush_interval=config.metering.flush_interval, batch_size=config.metering.batch_size
        )
        self.authenticator = Authenticator(config.auth, self.store)
        self.upstream = Upstream(config)
        quotas = config.policies.quotas
        self.selector = QuotaSelector(
            self.store,  # type: ignore[arg-type]
            tight_threshold=quotas.tight_threshold,
            normal_ttl=quotas.normal_ttl,
            tight_ttl=quotas.tight_ttl,
        )
        self.admission = Admission(config.policies, self.selector, self.prices, RateLimiter())
        self.handler = ProxyHandler(
            authenticator=self.authenticator,
            admission=self.admission,
            upstream=self.upstream,
            recorder=self.recorder,
            prices=self.prices,
            max_body_bytes=config.limits.max_body_bytes,
            max_usage_body_bytes=config.limits.max_usage_body_bytes,
        )
        self.started = False

    async def startup(self) -> None:
        await self.upstream.start()
        await self.recorder.start()
        self.started = True

    async def shutdown(self) -> None:
        """Flush what was metered, then let go of the upstream and the store."""
        self.started = False
        try:
            await self.recorder.stop()
        finally:
            await self.upstream.aclose()
            self.store.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    def readiness(self) -> tuple[bool, dict[str, object]]:
        checks: dict[str, object] = {
            "started": self.started,
            "upstream": self.upstream.ready,
            "metering_backlog": self.recorder.backlog,
        }
        return self.started and self.upstream.ready, checks


def create_app(config: Config, keeper: CostKeeper | None = None) -> Starlette:
    keeper = keeper or CostKeeper(config)
    app = Starlette(routes=[Mount("/", app=keeper.handler)], lifespan=keeper.lifespan)
    app.state.keeper = keeper
    return app


def create_admin_app(keeper: CostKeeper) -> Starlette:
    async def healthz(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    async def readyz(_request: Request) -> JSONResponse:
        ready, checks = keeper.readiness()
        return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz)])
