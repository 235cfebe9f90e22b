"""The admin port's app: health, readiness, metrics, the running configuration, and
the admin plane's APIs and dashboard, all reading one `CostKeeper` (proxy/app.py).

Built here rather than next to `CostKeeper`: the routes need the keeper, and the
keeper needs none of them, so the imports run one way (the package docstring)."""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from proxy.admin.client_api import client_routes
from proxy.admin.dashboard import dashboard_routes
from proxy.admin.override_api import override_routes
from proxy.admin.reload import public_config
from proxy.admin.usage_api import usage_routes
from proxy.app import CostKeeper
from proxy.config import Config

__all__ = ["admin_authorized", "create_admin_app"]


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

    async def running_config(request: Request) -> JSONResponse:
        """Which configuration this replica runs (its sha256 and content, no secret)."""
        if not admin_authorized(keeper.config, request):
            return JSONResponse({"message": "A valid admin token is required."}, status_code=401)
        return JSONResponse(public_config(keeper.config))

    return Starlette(routes=[
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics), *dashboard_routes(),
        Route("/v1/config", running_config),
        *usage_routes(keeper, lambda request: admin_authorized(keeper.config, request)),
        *override_routes(keeper, lambda request: admin_authorized(keeper.config, request)),
        *client_routes(keeper),
    ])


def admin_authorized(config: Config, request: Request) -> bool:
    """`Authorization: Bearer <COSTKEEPER_ADMIN_TOKEN>`; no token configured → nothing is authorized."""
    if not config.admin_token:
        return False
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), config.admin_token.encode())
