"""Who sent a request: the org and app behind a credential Cost Keeper issued.

`sigv4` mode verifies the client's SigV4 signature (and, since the same issued
credential backs both, accepts it as a bearer token too); `bearer` mode accepts
only `Authorization: Bearer <token>`; `trust` mode (a sidecar next to one app)
checks nothing and attributes every request to the configured org/app.

Two phases, so nobody without a valid key gets the proxy to read (and hold) a
body: `identify_head` refuses a missing or malformed credential, an unknown or
revoked key, a date out of skew or a Region not served from the head alone (and
checks a bearer token completely, refusing it over plain HTTP unless
`auth.allow_bearer_over_http`); `Identified.verified(body)` checks the signature.
Every refusal is an `AuthRefused`: the Bedrock error to answer plus what the
logs may name (an access key id of the issued shape, never a secret).

Key records are cached (cachetools TTL, misses included) so the store is not on
the hot path; a revocation reaches a running proxy within `auth.key_cache_ttl`.
The store keeps secrets encrypted, not hashed: SigV4 verification needs the
secret itself as its HMAC key (`metering/secret_box.py`).
"""

from __future__ import annotations

import functools
import hmac
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cachetools import TTLCache

from metering.secret_box import SecretKeyError
from metering.store import ACCESS_KEY_PREFIX, KeyRecord, KeyStore, parse_bearer_token
from proxy.config import AuthConfig
from proxy.errors import (
    AccessDeniedException,
    BedrockError,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    ServiceUnavailableException,
    UnrecognizedClientException,
    refusal,
)
from proxy.event_signing import ChainVerifier
from proxy.sigv4 import (
    SignedHead,
    check_signed_head,
    checked_headers,
    parse_authorization,
    verify_payload,
    verify_streaming_head,
)

__all__ = ["AuthRefused", "Caller", "Authenticator", "Identified"]

logger = logging.getLogger(__name__)
_UNKNOWN_KEY = "The security token included in the request is invalid."
_BEARER_OVER_HTTP = (
    "Bearer tokens are refused over plain HTTP: a token carries the key's secret. Call this endpoint "
    "over HTTPS (server.tls_cert and server.tls_key), sign with SigV4, or set "
    "auth.allow_bearer_over_http: true for a sidecar on localhost."
)
#: The shape of an access key id Cost Keeper issues: the only ids a log line may carry
#: (whatever else arrives in that place may be a secret pasted into the wrong variable).
_ISSUED_KEY_ID = re.compile(rf"{ACCESS_KEY_PREFIX}[A-Z0-9]{{16}}", re.ASCII)
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Caller:
    org: str
    app: str
    access_key_id: str | None = None
    #: The Region the client signed for (SigV4 credential scope); None for bearer and trust.
    region: str | None = None


class AuthRefused(Exception):
    """A request whose credentials were refused: the Bedrock-shaped error to answer, and
    what the logs may say about it (never the secret)."""

    def __init__(self, error: BedrockError, access_key_id: str | None = None, caller: Caller | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        #: The access key id the request named, if it has the shape of an issued one.
        self.access_key_id = access_key_id if access_key_id and _ISSUED_KEY_ID.fullmatch(access_key_id) else None
        #: The key's org and app when the key exists (a bad signature, a revoked key).
        self.caller = caller

    @property
    def reason(self) -> str:
        return self.error.reason or self.error.code


@functools.lru_cache(maxsize=4096)
def _signer_caller(org: str, app: str, access_key_id: str, region: str) -> Caller:
    """A SigV4 caller, the same for every request of its key and Region: made once (a frozen
    dataclass's `__init__` was a microsecond of every request, issue #20)."""
    return Caller(org, app, access_key_id, region)


@dataclass(slots=True)
class Identified:
    """The caller as its request head shows it: a known, active key, a date within the
    skew, a Region served. `verified(body)` checks the signature once the body is in;
    bearer tokens and trust mode are complete already. Nothing changes one once made; it
    is not frozen only because a frozen dataclass's `__init__` cost a microsecond per request."""

    caller: Caller
    _head: SignedHead | None = None
    _secret: str = field(default="", repr=False)
    _target: tuple[str, str, str, str] = ("", "", "", "")
    _max_skew: int = 300

    def verify_stream(self) -> tuple[Caller, ChainVerifier | None]:
        """For a signed event stream (InvokeModelWithBidirectionalStream): the caller once
        its head is signed for one, and the verifier of its events' chain (None for bearer
        and trust callers, whose events carry no signature of theirs to check)."""
        if self._head is None:
            return self.caller, None
        method, host, raw_path, raw_query = self._target
        try:
            verify_streaming_head(self._head, self._secret, method=method, host=host, raw_path=raw_path,
                                  raw_query=raw_query)
        except BedrockError as error:
            raise AuthRefused(error, self.caller.access_key_id, self.caller) from None
        parsed = self._head.parsed
        return self.caller, ChainVerifier(parsed.access_key, self._secret, parsed.region, parsed.service,
                                          parsed.signature, max_skew_seconds=self._max_skew)

    def verified(self, body: bytes) -> tuple[Caller, str | None]:
        """The caller, once the body matches the signature (raises `AuthRefused`), and the
        body's SHA-256 (hex) when verifying computed it (a SigV4 caller's): re-signing for
        Bedrock signs it rather than hashing the body again. One method, not a second one
        for callers that want the caller alone: this is the one the request path calls
        (and `bench/timeline_hooks` wraps), so a test of it tests that."""
        if self._head is None:
            return self.caller, None
        method, host, raw_path, raw_query = self._target
        try:
            digest = verify_payload(self._head, self._secret, method=method, host=host, raw_path=raw_path,
                                    raw_query=raw_query, body=body)
        except BedrockError as error:
            raise AuthRefused(error, self.caller.access_key_id, self.caller) from None
        return self.caller, digest


class Authenticator:
    def __init__(self, config: AuthConfig, keys: KeyStore, regions: frozenset[str] = frozenset()) -> None:
        """`regions`: the Regions a SigV4 client may sign for (the home Region and
        `upstream.regions`); empty accepts any, as before region routing existed."""
        self._regions = regions
        self._config = config
        self._keys = keys
        self._trusted = Identified(Caller(config.trust_org, config.trust_app))
        self._cache: TTLCache[str, Any] = TTLCache(maxsize=100_000, ttl=max(config.key_cache_ttl, 1e-9))

    async def identify_head(
        self,
        *,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Sequence[tuple[bytes, bytes]],
        authorization: str | None,
        host: str,
        secure: bool,
    ) -> Identified:
        """Everything the head can tell, before a byte of the body is read: a client
        without a valid, active key never gets to send one. Raises `AuthRefused`
        (or `ServiceUnavailableException` when the key store is out of reach).

        `secure`: whether the request came over TLS (bearer tokens need it)."""
        mode = self._config.mode
        if mode == "trust":
            return self._trusted
        if not authorization:
            raise AuthRefused(refusal(MissingAuthenticationTokenException("Missing Authentication Token"),
                                      "missing"))
        if authorization[:7].lower() == "bearer ":
            return Identified(await self._bearer(authorization[7:].strip(), secure))
        if mode == "bearer":
            raise AuthRefused(refusal(AccessDeniedException(
                "This endpoint accepts only Bedrock API keys (Authorization: Bearer)."), "bearer_only"))
        try:
            parsed = parse_authorization(authorization)
        except BedrockError as error:
            raise AuthRefused(error) from None
        if self._regions and parsed.region not in self._regions:
            # AWS's answer to a credential scoped to a Region the endpoint is not in.
            raise AuthRefused(refusal(InvalidSignatureException(
                f"Credential should be scoped to a valid region. This proxy serves: {', '.join(sorted(self._regions))}."
            ), "wrong_region"), parsed.access_key)
        try:
            head = check_signed_head(parsed, checked_headers(parsed, headers),
                                    max_skew_seconds=self._config.max_skew_seconds)
        except BedrockError as error:
            raise AuthRefused(error, parsed.access_key) from None
        record = await self._record(parsed.access_key)
        caller = _signer_caller(record.org, record.app, record.access_key_id, parsed.region)
        return Identified(caller, head, record.secret, (method, host, raw_path, raw_query),
                          self._config.max_skew_seconds)

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
        secure: bool,
    ) -> Caller:
        """Both phases, for a request whose body is already at hand."""
        identified = await self.identify_head(method=method, raw_path=raw_path, raw_query=raw_query,
                                              headers=headers, authorization=authorization, host=host,
                                              secure=secure)
        return identified.verified(body)[0]

    async def _bearer(self, token: str, secure: bool) -> Caller:
        parsed = parse_bearer_token(token)
        if parsed is None:
            raise AuthRefused(refusal(UnrecognizedClientException(_UNKNOWN_KEY), "malformed"))
        access_key_id, secret = parsed
        if not secure and not self._config.allow_bearer_over_http:
            # Refused before any lookup: the answer tells nothing about the token.
            raise AuthRefused(refusal(AccessDeniedException(_BEARER_OVER_HTTP), "bearer_over_http"), access_key_id)
        record = await self._record(access_key_id)
        caller = Caller(record.org, record.app, record.access_key_id)
        if not hmac.compare_digest(record.secret.encode(), secret.encode()):
            raise AuthRefused(refusal(UnrecognizedClientException(_UNKNOWN_KEY), "wrong_secret"),
                              access_key_id, caller)
        return caller

    async def _record(self, access_key_id: str) -> KeyRecord:
        try:
            record = self._cache[access_key_id]  # `get` is three times the Python calls of a hit
        except KeyError:
            record = _MISSING
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
        if record is None:
            raise AuthRefused(refusal(UnrecognizedClientException(_UNKNOWN_KEY), "unknown_key"), access_key_id)
        if record.revoked_at is not None:
            raise AuthRefused(refusal(UnrecognizedClientException(_UNKNOWN_KEY), "revoked_key"), access_key_id,
                              Caller(record.org, record.app, record.access_key_id))
        return record
