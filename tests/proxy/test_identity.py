"""Caller identity in two phases: the head refuses whoever it can, the body completes SigV4.

The key store here counts its lookups: what the head alone shows is wrong (a
missing or malformed credential, a stale date, a Region not served, a bearer
token over plain HTTP) must be refused before the store is asked.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
from types import SimpleNamespace
from typing import Any

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cachetools import TTLCache
from starlette.requests import Request

from metering.store import KeyRecord
from proxy import identity
from proxy.admin.app import admin_authorized
from proxy.config import AuthConfig
from proxy.errors import (
    AccessDeniedException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)
from proxy.identity import Authenticator, AuthRefused, Identified

HOST = "127.0.0.1:8080"
PATH = "/model/us.amazon.nova-micro-v1%3A0/converse"
BODY = json.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}).encode()
ACTIVE = KeyRecord("CKIAACTIVE0000000001", "acme", "chat", "A" * 40, 0.0)
OTHER = KeyRecord("CKIAOTHER00000000002", "beta", "bot", "B" * 40, 0.0)
REVOKED = KeyRecord("CKIAREVOKED000000003", "acme", "old", "C" * 40, 0.0, revoked_at=1.0)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Keys:
    """A key store with three keys, counting lookups."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    async def get_key(self, access_key_id: str) -> KeyRecord | None:
        self.lookups.append(access_key_id)
        return {key.access_key_id: key for key in (ACTIVE, OTHER, REVOKED)}.get(access_key_id)


def signed(record: KeyRecord | None = None, *, key_id: str | None = None, secret: str | None = None,
           region: str = "us-east-1", body: bytes = BODY, headers: dict[str, str] | None = None,
           when: dt.datetime | None = None, monkeypatch: pytest.MonkeyPatch | None = None) -> list[tuple[bytes, bytes]]:
    record = record or ACTIVE
    request = AWSRequest("POST", f"http://{HOST}{PATH}", data=body,
                         headers={"Content-Type": "application/json", **(headers or {})})
    if when is not None and monkeypatch is not None:
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: when)
    SigV4Auth(Credentials(key_id or record.access_key_id, secret or record.secret), "bedrock",
              region).add_auth(request)
    if monkeypatch is not None:
        monkeypatch.undo()
    return [(name.lower().encode(), value.encode()) for name, value in request.headers.items()]


def authorization(headers: list[tuple[bytes, bytes]]) -> str | None:
    return next((value.decode() for name, value in headers if name == b"authorization"), None)


async def head(authenticator: Authenticator, headers: list[tuple[bytes, bytes]], *, secure: bool = False,
               query: str = "") -> Identified:
    return await authenticator.identify_head(method="POST", raw_path=PATH, raw_query=query, headers=headers,
                                             authorization=authorization(headers), host=HOST, secure=secure)


def authenticator(keys: Keys, **config: Any) -> Authenticator:
    return Authenticator(AuthConfig(key_cache_ttl=0, **config), keys, frozenset({"us-east-1"}))  # type: ignore[arg-type]


async def test_a_signed_request_is_identified_from_its_head_and_verified_with_its_body() -> None:
    keys = Keys()
    identified = await head(authenticator(keys), signed())
    assert (identified.caller.org, identified.caller.app, identified.caller.region) == ("acme", "chat", "us-east-1")
    assert identified.verified(BODY)[0] == identified.caller
    with pytest.raises(AuthRefused) as refused:
        identified.verified(BODY.replace(b"hi", b"ho"))  # tampered body
    assert isinstance(refused.value.error, InvalidSignatureException)
    assert (refused.value.reason, refused.value.access_key_id) == ("bad_signature", ACTIVE.access_key_id)
    assert refused.value.caller is not None and refused.value.caller.org == "acme"


def _stale() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=6)


@pytest.mark.parametrize(
    ("case", "error", "reason", "looked_up"),
    [
        ("missing", MissingAuthenticationTokenException, "missing", False),
        ("basic scheme", MissingAuthenticationTokenException, "malformed", False),
        ("no signature", InvalidSignatureException, "malformed", False),
        ("host not signed", InvalidSignatureException, "malformed", False),
        ("presigned query", MissingAuthenticationTokenException, "missing", False),
        ("wrong region", InvalidSignatureException, "wrong_region", False),
        ("bogus region", InvalidSignatureException, "wrong_region", False),
        ("wrong service", InvalidSignatureException, "wrong_service", False),
        ("stale date", InvalidSignatureException, "clock_skew", False),
        ("unsigned payload", InvalidSignatureException, "unsigned_payload", False),
        ("unknown key", UnrecognizedClientException, "unknown_key", True),
        ("revoked key", UnrecognizedClientException, "revoked_key", True),
    ],
)
async def test_the_head_alone_refuses(case: str, error: type[Exception], reason: str, looked_up: bool,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    good = signed()
    query = ""
    headers = {
        "missing": lambda: [(n, v) for n, v in good if n != b"authorization"],
        "basic scheme": lambda: [(b"authorization", b"Basic dXNlcjpwYXNz")],
        "no signature": lambda: [(b"authorization", b"AWS4-HMAC-SHA256 Credential=CKIAACTIVE0000000001/20261123/"
                                                     b"us-east-1/bedrock/aws4_request")],
        "host not signed": lambda: [(b"authorization", b"AWS4-HMAC-SHA256 Credential=A/20261123/us-east-1/bedrock/"
                                                        b"aws4_request, SignedHeaders=x-amz-date, Signature="
                                                        + b"0" * 64)],
        "presigned query": lambda: [(n, v) for n, v in good if n != b"authorization"],
        "wrong region": lambda: signed(region="eu-west-1"),
        "bogus region": lambda: signed(region="xx-bogus-9"),
        "wrong service": lambda: _resigned_for_service(),
        "stale date": lambda: signed(when=_stale(), monkeypatch=monkeypatch),
        "unsigned payload": lambda: signed(headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}),
        "unknown key": lambda: signed(key_id="CKIAUNKNOWN000000009"),
        "revoked key": lambda: signed(REVOKED),
    }[case]()
    if case == "presigned query":
        query = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=CKIAACTIVE0000000001%2F20261123%2Fus-east-1"
                 "%2Fbedrock%2Faws4_request&X-Amz-Date=20261123T120000Z&X-Amz-SignedHeaders=host"
                 "&X-Amz-Signature=" + "0" * 64)
    keys = Keys()
    with pytest.raises(AuthRefused) as refused:
        await head(authenticator(keys), headers, query=query)
    assert type(refused.value.error) is error
    assert refused.value.reason == reason
    assert bool(keys.lookups) == looked_up
    if case == "revoked key":
        assert refused.value.caller is not None and refused.value.caller.app == "old"


def _resigned_for_service() -> list[tuple[bytes, bytes]]:
    request = AWSRequest("POST", f"http://{HOST}{PATH}", data=BODY)
    SigV4Auth(Credentials(ACTIVE.access_key_id, ACTIVE.secret), "bedrock-runtime", "us-east-1").add_auth(request)
    return [(name.lower().encode(), value.encode()) for name, value in request.headers.items()]


def bearer(record: KeyRecord, secret: str | None = None) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer ck-{record.access_key_id}-{secret or record.secret}".encode())]


async def test_bearer_tokens_are_refused_over_plain_http_unless_allowed() -> None:
    keys = Keys()
    with pytest.raises(AuthRefused) as refused:
        await head(authenticator(keys), bearer(ACTIVE), secure=False)
    assert isinstance(refused.value.error, AccessDeniedException)
    assert "auth.allow_bearer_over_http" in refused.value.error.message
    assert refused.value.reason == "bearer_over_http" and refused.value.access_key_id == ACTIVE.access_key_id
    assert keys.lookups == []  # refused before any lookup: the answer says nothing about the token
    assert ACTIVE.secret not in str(refused.value) + refused.value.error.message
    over_tls = await head(authenticator(keys), bearer(ACTIVE), secure=True)
    allowed = await head(authenticator(keys, allow_bearer_over_http=True), bearer(ACTIVE), secure=False)
    assert over_tls.caller == allowed.caller and over_tls.caller.app == "chat"
    assert over_tls.verified(b"anything")[0] == over_tls.caller  # a bearer token is complete from the head


@pytest.mark.parametrize("mode", ["sigv4", "bearer"])
async def test_a_token_mixing_two_keys_is_refused(mode: str) -> None:
    with pytest.raises(AuthRefused) as refused:
        await head(authenticator(Keys(), mode=mode), bearer(ACTIVE, secret=OTHER.secret), secure=True)
    assert isinstance(refused.value.error, UnrecognizedClientException)
    assert refused.value.reason == "wrong_secret"


async def test_sigv4_in_bearer_mode_and_malformed_tokens() -> None:
    with pytest.raises(AuthRefused) as refused:
        await head(authenticator(Keys(), mode="bearer"), signed(), secure=True)
    assert (type(refused.value.error), refused.value.reason) == (AccessDeniedException, "bearer_only")
    with pytest.raises(AuthRefused) as refused:
        await head(authenticator(Keys()), [(b"authorization", b"Bearer not-a-token")], secure=True)
    assert refused.value.reason == "malformed" and refused.value.access_key_id is None


async def test_only_an_id_of_the_issued_shape_is_named() -> None:
    """A secret pasted where the key id goes (swapped variables) never reaches a log line."""
    with pytest.raises(AuthRefused) as refused:
        await head(authenticator(Keys()), signed(key_id=ACTIVE.secret))
    assert refused.value.reason == "unknown_key" and refused.value.access_key_id is None


async def test_trust_mode_checks_nothing() -> None:
    keys = Keys()
    identified = await head(authenticator(keys, mode="trust", trust_org="t", trust_app="a"), [], secure=False)
    assert (identified.caller.org, identified.caller.app) == ("t", "a") and keys.lookups == []
    assert identified.verified(b"")[0] == identified.caller


async def test_the_host_is_signed_and_checked() -> None:
    """The signature covers the Host the request arrived with: one made for another
    host (a captured request replayed at another endpoint) does not verify."""
    headers = [*signed(), (b"host", HOST.encode())]
    identified = await head(authenticator(Keys()), headers)
    assert identified.verified(BODY)[0] == identified.caller
    elsewhere = [(name, b"proxy.example:443" if name == b"host" else value) for name, value in headers]
    moved = await authenticator(Keys()).identify_head(
        method="POST", raw_path=PATH, raw_query="", headers=elsewhere, authorization=authorization(headers),
        host="proxy.example:443", secure=False)
    with pytest.raises(AuthRefused) as refused:
        moved.verified(BODY)
    assert isinstance(refused.value.error, InvalidSignatureException) and refused.value.reason == "bad_signature"


class RevocableKeys(Keys):
    """The key store, where a key can be revoked while the proxy runs."""

    def __init__(self) -> None:
        super().__init__()
        self.records = {ACTIVE.access_key_id: ACTIVE}

    async def get_key(self, access_key_id: str) -> KeyRecord | None:
        self.lookups.append(access_key_id)
        return self.records.get(access_key_id)


async def test_a_revoked_key_stops_at_the_key_cache_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    """README: `key_cache_ttl` is the revocation delay. The key's record is cached that
    long (the store stays off the hot path), and a revocation is in force once it has passed."""
    now = [1000.0]
    monkeypatch.setattr(identity, "TTLCache", lambda maxsize, ttl: TTLCache(maxsize, ttl, timer=lambda: now[0]))
    keys = RevocableKeys()
    auth = Authenticator(AuthConfig(key_cache_ttl=30), keys, frozenset({"us-east-1"}))  # type: ignore[arg-type]
    assert (await head(auth, signed())).verified(BODY)[0].app == "chat"
    keys.records[ACTIVE.access_key_id] = dataclasses.replace(ACTIVE, revoked_at=now[0])
    now[0] += 29.9
    assert (await head(auth, signed())).verified(BODY)[0].app == "chat"  # cached: the store was asked once
    assert keys.lookups == [ACTIVE.access_key_id]
    now[0] += 0.1
    with pytest.raises(AuthRefused) as refused:
        await head(auth, signed())
    assert isinstance(refused.value.error, UnrecognizedClientException) and refused.value.reason == "revoked_key"
    with pytest.raises(AuthRefused):
        await head(auth, bearer(ACTIVE), secure=True)


async def test_secrets_and_signatures_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every comparison with a secret or a signature goes through `hmac.compare_digest`
    (a `==` would stop at the first differing byte and time would tell how many matched):
    the SigV4 signature, a bearer token's secret and the admin token."""
    compared: list[tuple[bytes | str, bytes | str]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    with pytest.raises(AuthRefused):
        (await head(authenticator(Keys()), signed(secret="D" * 40))).verified(BODY)
    assert len(compared) == 1 and authorization(signed(secret="D" * 40)).endswith(str(compared[0][1]))
    with pytest.raises(AuthRefused):
        await head(authenticator(Keys()), bearer(ACTIVE, secret="D" * 40), secure=True)
    assert compared[1] == (ACTIVE.secret.encode(), b"D" * 40)
    request = Request({"type": "http", "headers": [(b"authorization", b"Bearer wrong-token")]})
    assert not admin_authorized(SimpleNamespace(admin_token="right-token"), request)  # type: ignore[arg-type]
    assert compared[2] == (b"wrong-token", b"right-token")


async def test_verifying_gives_the_body_hash_that_re_signing_reuses() -> None:
    """A SigV4 caller's body is hashed to verify it; that hash goes on to re-signing
    (`Upstream.send(body_sha256=…)`, issue #20). Trust and bearer callers have none."""
    identified = await head(authenticator(Keys()), signed())
    assert identified.verified(BODY) == (identified.caller, hashlib.sha256(BODY).hexdigest())
    trusted = await head(authenticator(Keys(), mode="trust"), [])
    assert trusted.verified(BODY) == (trusted.caller, None)
