"""Who sent a request: the org and app behind a credential Cost Keeper issued.

`sigv4` mode verifies the client's SigV4 signature (and, since the same issued
credential backs both, accepts it as a bearer token too); `bearer` mode accepts
only `Authorization: Bearer <token>`; `trust` mode (a sidecar next to one app)
checks nothing and attributes every request to the configured org/app.

Key records are cached (cachetools TTL, misses included) so the store is not on
the hot path; a revocation reaches a running proxy within `auth.key_cache_ttl`.
The store keeps secrets encrypted, not hashed: SigV4 verification needs the
secret itself as its HMAC key (`metering/secret_box.py`).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache

from metering.secret_box import SecretKeyError
from metering.store import KeyRecord, KeyStore, parse_bearer_token
from proxy.config import AuthConfig
from proxy.errors import (
    AccessDeniedException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    ServiceUnavailableException,
    UnrecognizedClientException,
)
from proxy.sigv4 import parse_authorization, verify_signature

__all__ = ["Caller", "Authenticator"]

logger = logging.getLogger(__name__)
_UNKNOWN_KEY = "The security token included in the request is invalid."
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Caller:
    org: str
    app: str
    access_key_id: str | None = None
    #: The Region the client signed for (SigV4 credential scope); None for bearer and trust.
    region: str | None = None


class Authenticator:
    def __init__(self, config: AuthConfig, keys: KeyStore, regions: frozenset[str] = frozenset()) -> None:
        """`regions`: the Regions a SigV4 client may sign for (the home Region and
        `upstream.regions`); empty accepts any, as before region routing existed."""
        self._regions = regions
        self._config = config
        self._keys = keys
        self._trusted = Caller(config.trust_org, config.trust_app)
        self._cache: TTLCache[str, Any] = TTLCache(maxsize=100_000, ttl=max(config.key_cache_ttl, 1e-9))

    async def identify(
        self,
        *,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Sequence[tuple[bytes, bytes]],
        authorization: str | None,
        host: str,
        body: bytes,
    ) -> Caller:
        mode = self._config.mode
        if mode == "trust":
            return self._trusted
        if not authorization:
            raise MissingAuthenticationTokenException("Missing Authentication Token")
        if authorization[:7].lower() == "bearer ":
            return await self._bearer(authorization[7:].strip())
        if mode == "bearer":
            raise AccessDeniedException("This endpoint accepts only Bedrock API keys (Authorization: Bearer).")
        parsed = parse_authorization(authorization)
        if self._regions and parsed.region not in self._regions:
            # AWS's answer to a credential scoped to a Region the endpoint is not in.
            raise InvalidSignatureException(
                f"Credential should be scoped to a valid region. This proxy serves: {', '.join(sorted(self._regions))}."
            )
        record = await self._record(parsed.access_key)
        verify_signature(
            parsed,
            record.secret,
            method=method,
            host=host,
            raw_path=raw_path,
            raw_query=raw_query,
            headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers],
            body=body,
            max_skew_seconds=self._config.max_skew_seconds,
        )
        return Caller(record.org, record.app, record.access_key_id, parsed.region)

    async def _bearer(self, token: str) -> Caller:
        parsed = parse_bearer_token(token)
        if parsed is None:
            raise UnrecognizedClientException(_UNKNOWN_KEY)
        access_key_id, secret = parsed
        record = await self._record(access_key_id)
        if not hmac.compare_digest(record.secret.encode(), secret.encode()):
            raise UnrecognizedClientException(_UNKNOWN_KEY)
        return Caller(record.org, record.app, record.access_key_id)

    async def _record(self, access_key_id: str) -> KeyRecord:
        record = self._cache.get(access_key_id, _MISSING)
        if record is _MISSING:
            try:
                record = await self._keys.get_key(access_key_id)
            except SecretKeyError as exc:  # no key, a wrong one, or an altered row: says which, never the secret
                logger.error("credential lookup failed: %s", exc)
                raise ServiceUnavailableException(
                    "The credential store is unavailable; please try again shortly."
                ) from None
            except Exception as exc:  # the store is unreachable: retryable, and not cached
                logger.warning("credential lookup failed: %s", type(exc).__name__)
                raise ServiceUnavailableException(
                    "The credential store is unavailable; please try again shortly."
                ) from None
            self._cache[access_key_id] = record
        if record is None or record.revoked_at is not None:
            raise UnrecognizedClientException(_UNKNOWN_KEY)
        return record
