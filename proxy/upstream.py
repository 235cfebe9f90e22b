"""The way to Bedrock: the proxy's own credentials, SigV4 re-signing, one pooled client.

Credentials come from the standard AWS chain via aiobotocore (environment,
shared profile, web identity / IRSA, container and instance roles) and are
refreshed without blocking the event loop. Signing is botocore's `SigV4Auth`
with signing name `bedrock`. The path is sent exactly as it was signed: httpx
keeps percent-encodings as given, so `%3A` and `%2F` survive.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from aiobotocore.session import get_session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from proxy.config import Config
from proxy.sigv4 import SIGNING_SERVICE

__all__ = ["Upstream", "NoUpstreamCredentials"]

logger = logging.getLogger(__name__)


class NoUpstreamCredentials(RuntimeError):
    """The AWS credential chain found nothing for the proxy to sign with."""


class Upstream:
    def __init__(self, config: Config) -> None:
        self._base_url = config.upstream_url
        self._host = httpx.URL(self._base_url).netloc.decode("ascii")
        self._region = config.region
        up = config.upstream
        self._timeout = httpx.Timeout(
            connect=up.connect_timeout, read=up.read_timeout, write=up.write_timeout, pool=up.pool_timeout
        )
        self._limits = httpx.Limits(
            max_connections=up.max_connections, max_keepalive_connections=up.max_keepalive_connections
        )
        self._client: httpx.AsyncClient | None = None
        self._credentials: Any = None

    @property
    def ready(self) -> bool:
        return self._client is not None and self._credentials is not None

    async def start(self) -> None:
        self._credentials = await get_session().get_credentials()
        if self._credentials is None:
            raise NoUpstreamCredentials(
                "no AWS credentials found for the upstream (environment, shared profile, "
                "web identity, container or instance role)"
            )
        self._client = httpx.AsyncClient(timeout=self._timeout, limits=self._limits, trust_env=False)
        logger.info("upstream %s, region %s, credentials via %s", self._base_url, self._region,
                    getattr(self._credentials, "method", "unknown"))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(
        self, method: str, raw_path: str, raw_query: str, headers: dict[str, str], body: bytes
    ) -> httpx.Response:
        """Sign and send; the response is open and streaming (the caller closes it)."""
        assert self._client is not None, "Upstream.start() was not awaited"
        url = self._base_url + raw_path + (f"?{raw_query}" if raw_query else "")
        headers["host"] = self._host
        signed = AWSRequest(method=method, url=url, data=body, headers=headers)
        frozen = await self._credentials.get_frozen_credentials()
        SigV4Auth(frozen, SIGNING_SERVICE, self._region).add_auth(signed)
        request = self._client.build_request(method, url, headers=signed.headers.items(), content=body)
        return await self._client.send(request, stream=True)
