"""Verify a client's AWS SigV4 signature against a secret Cost Keeper issued.

Two steps, so a proxy can refuse a caller before reading its body
(`check_signed_head`: service, date, skew, the declared payload hash's form) and
check the signature once the body is in (`verify_payload`).

The canonical request is rebuilt by botocore's own `SigV4Auth` (never a second
implementation of SigV4; its kept-key subclass is `proxy.sigv4_signer`'s, which
re-signing for Bedrock uses too), fed with the request exactly as it arrived: the raw,
still percent-encoded path (botocore then double-encodes it, as every non-S3
AWS service does) and only the headers the client listed in `SignedHeaders`.
Recipe and pitfalls: BEDROCK_WIRE.md §5.2.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import NamedTuple

from botocore.credentials import Credentials

from proxy.errors import (
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    refusal,
)
from proxy.sigv4_signer import (
    KEPT_ENTRIES,
    SIGNING_SERVICE,
    KeptKeySigV4Auth,
    PlainRequest,
    SignedHeaders,
)

__all__ = [
    "STREAMING_PAYLOAD",
    "SignedHead",
    "SignedRequest",
    "check_signed_head",
    "checked_headers",
    "parse_authorization",
    "verify_payload",
    "verify_signature",
    "verify_streaming_head",
]

#: The payload hash the head of a signed event stream declares and signs
#: (InvokeModelWithBidirectionalStream; its events are signed one by one: proxy/event_signing.py).
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-EVENTS"
_ALGORITHM = "AWS4-HMAC-SHA256"
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
#: `_AMZ_DATE`'s shape, ASCII digits only (`_signed_at` reads the numbers).
_AMZ_DATE_RE = re.compile(r"\d{8}T\d{6}Z\Z", re.ASCII)
#: An `Authorization` value but its last 64 characters (the signature): the key, scope and
#: signed headers, the same for every request a client signs in a day.
_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+"
    r"Credential=(?P<key>[^/,\s]{1,128})/(?P<date>\d{8})/(?P<region>[a-z0-9-]{1,32})/"
    r"(?P<service>[a-z0-9-]{1,64})/aws4_request\s*,\s*"
    r"SignedHeaders=(?P<headers>[a-z0-9;:._-]{1,2048})\s*,\s*"
    r"Signature="
)
#: The AWS SDK for JavaScript over HTTP/2 signs the host as the `:authority` pseudo-header,
#: under that name (NodeHttp2Handler; Bedrock accepts it). Its value is the request's host.
_AUTHORITY = ":authority"
#: The signed header names whose value is the request's host.
_HOSTS = frozenset({"host", _AUTHORITY})
_SHA256_HEX = re.compile(r"[0-9a-f]{64}", re.ASCII)
_DECLARED_HASH = "The provided 'x-amz-content-sha256' header does not match what was computed."
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


class SignedRequest(NamedTuple):
    """The parsed `Authorization` header of a SigV4 request (a tuple: one per request, and
    a frozen dataclass's `__init__` cost a microsecond more)."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> SignedRequest:
    stripped = value.strip()
    signature = stripped[-64:]
    scope = _scope(stripped[:-64]) if _SHA256_HEX.fullmatch(signature) else None
    if scope is None:
        if not value.startswith(_ALGORITHM):
            raise refusal(MissingAuthenticationTokenException("Missing Authentication Token"), "malformed")
        raise refusal(InvalidSignatureException("Authorization header requires 'Credential', "
                                                "'SignedHeaders' and 'Signature' parameters."), "malformed")
    return SignedRequest(*scope, signature)


@functools.lru_cache(maxsize=KEPT_ENTRIES)
def _scope(prefix: str) -> tuple[str, str, str, str, tuple[str, ...]] | None:
    """(access key, date, Region, service, signed header names) of an `Authorization` value
    but its signature, None if it is malformed: kept, as a client sends the same all day."""
    match = _AUTH_RE.fullmatch(prefix)
    if match is None:
        return None
    signed = tuple(match["headers"].split(";"))
    if "host" not in signed and _AUTHORITY not in signed:
        raise refusal(InvalidSignatureException("'Host' must be a signed header."), "malformed")
    return match["key"], match["date"], match["region"], match["service"], signed


@functools.lru_cache(maxsize=KEPT_ENTRIES)
def _read_by_checks(signed_headers: tuple[str, ...]) -> Mapping[bytes, str]:
    """The header names `check_signed_head` and `verify_payload` read: as an ASGI scope
    spells them → as the checks name them."""
    return {name.encode("latin-1"): name for name in (*signed_headers, "x-amz-date", "x-amz-content-sha256")}


def checked_headers(parsed: SignedRequest, raw: Iterable[tuple[bytes, bytes]]) -> dict[str, list[str]]:
    """The headers of an ASGI scope that the checks read (those signed, `x-amz-date`,
    `x-amz-content-sha256`), lower-case name → values, decoded, for `check_signed_head`:
    the others (the long `Authorization` among them) are never decoded. ASGI's names are
    lower-case already (uvicorn lower-cases them, HTTP/2 allows no other: issue #20, the
    sigv4 path lower-cased them twice more), so they are looked up as they come."""
    wanted = _read_by_checks(parsed.signed_headers)
    by_name: dict[str, list[str]] = {}
    for raw_name, value in raw:
        name = wanted.get(raw_name)
        if name is not None:
            if name in by_name:
                by_name[name].append(value.decode("latin-1"))
            else:
                by_name[name] = [value.decode("latin-1")]
    return by_name


@functools.lru_cache(maxsize=KEPT_ENTRIES)
def _verifier(access_key: str, secret: str, region: str, service: str) -> KeptKeySigV4Auth:
    """The signer that recomputes a client's signatures: per key, secret (a rotated key is
    another) and credential scope."""
    return KeptKeySigV4Auth(Credentials(access_key, secret), service, region)


class SignedHead(NamedTuple):
    """A SigV4 request whose head passed every check that needs neither the secret
    nor the body: service, date, clock skew and the declared payload hash's form.
    What is left (`verify_payload`) waits for the body. (A tuple, as `SignedRequest`.)"""

    parsed: SignedRequest
    #: The headers the checks read (`checked_headers`), lower-case name → values, as received.
    by_name: dict[str, list[str]]
    amz_date: str


def check_signed_head(
    parsed: SignedRequest,
    by_name: dict[str, list[str]],
    *,
    now: datetime | None = None,
    max_skew_seconds: int = 300,
) -> SignedHead:
    """Raise `InvalidSignatureException` for what the head alone shows is wrong, so the
    caller is refused before its body is read (a stale date, `UNSIGNED-PAYLOAD`).
    `by_name`: the headers the checks read, as `checked_headers` picks them from an ASGI
    scope; the proxy and the simulator (served by the same uvicorn and HTTP/2 protocols)
    both read theirs so."""
    if parsed.service != SIGNING_SERVICE:
        raise refusal(InvalidSignatureException(
            f"Credential should be scoped to correct service: '{SIGNING_SERVICE}'."
        ), "wrong_service")
    amz_date = (by_name.get("x-amz-date") or [""])[0]
    _check_date(amz_date, parsed.date, time.time() if now is None else now.timestamp(), max_skew_seconds)
    # The signature must cover the body: a declared hash has to be one (never
    # UNSIGNED-PAYLOAD), and `verify_payload` checks it is the body's.
    declared = by_name.get("x-amz-content-sha256")
    if declared is not None and declared[0] != STREAMING_PAYLOAD and _SHA256_HEX.fullmatch(declared[0]) is None:
        raise refusal(InvalidSignatureException(_DECLARED_HASH), "unsigned_payload")
    return SignedHead(parsed, by_name, amz_date)


def verify_payload(
    head: SignedHead,
    secret: str,
    *,
    method: str,
    host: str,
    raw_path: str,
    raw_query: str,
    body: bytes,
) -> str:
    """Raise `InvalidSignatureException` unless the request is signed with `secret`;
    `host` must be the Host header as the client sent it (port included). Returns the
    body's SHA-256 (hex), which its re-signing reuses (`proxy.upstream.sign`)."""
    digest = hashlib.sha256(body).hexdigest()
    declared = head.by_name.get("x-amz-content-sha256")
    # STREAMING_PAYLOAD is no body's hash: a whole body declared so is refused here.
    if declared is not None and declared[0] != digest:
        raise refusal(InvalidSignatureException(_DECLARED_HASH), "bad_signature")
    # A declared hash is the body's (checked above): the payload line is the same either way.
    _verify(head, secret, method, host, raw_path, raw_query, body, body_sha256=digest)
    return digest


def verify_streaming_head(head: SignedHead, secret: str, *, method: str, host: str, raw_path: str,
                          raw_query: str) -> None:
    """`verify_payload` for a signed event stream: the head must declare and sign
    `STREAMING_PAYLOAD`; its events are checked one by one as they come (proxy/event_signing.py)."""
    declared = head.by_name.get("x-amz-content-sha256")
    if declared is None or declared[0] != STREAMING_PAYLOAD:
        raise refusal(InvalidSignatureException(
            f"An event stream must be signed with x-amz-content-sha256: {STREAMING_PAYLOAD}."), "bad_signature")
    _verify(head, secret, method, host, raw_path, raw_query, b"", payload_hash=STREAMING_PAYLOAD)


def _verify(head: SignedHead, secret: str, method: str, host: str, raw_path: str, raw_query: str, body: bytes, *,
            payload_hash: str | None = None, body_sha256: str | None = None) -> None:
    """Recompute the signature with botocore; `payload_hash`: the canonical request's
    payload line as the client declared it (`STREAMING_PAYLOAD`), `body_sha256`: the
    body's hash, computed already; with neither, botocore hashes `body`."""
    parsed = head.parsed
    by_name = head.by_name
    # A signed header the request lacks is left out: the signatures then differ.
    to_sign = SignedHeaders({name: values for name in parsed.signed_headers
                             if (values := [host] if name in _HOSTS else by_name.get(name))})
    # The request carries no headers but a declared payload hash: botocore signs `to_sign`.
    request = PlainRequest(method, f"http://{host}{raw_path}" + (f"?{raw_query}" if raw_query else ""), body,
                           to_sign=to_sign, body_sha256=body_sha256)
    if payload_hash is not None:
        request.headers["X-Amz-Content-SHA256"] = payload_hash
    request.context["timestamp"] = head.amz_date
    signer = _verifier(parsed.access_key, secret, parsed.region, parsed.service)
    try:
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)),
                                    request)
    except ValueError:
        # botocore's URL split refuses a Host such as "[" (an unclosed IPv6 literal):
        # a request nobody signed that way, so a mismatch rather than a crash.
        raise refusal(InvalidSignatureException(_MISMATCH), "bad_signature") from None
    if not hmac.compare_digest(expected, parsed.signature):
        raise refusal(InvalidSignatureException(_MISMATCH), "bad_signature")


def verify_signature(
    parsed: SignedRequest,
    secret: str,
    *,
    method: str,
    host: str,
    raw_path: str,
    raw_query: str,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
    now: datetime | None = None,
    max_skew_seconds: int = 300,
) -> None:
    """Both checks at once, for a request whose body is at hand (the simulator); `headers`:
    an ASGI scope's, lower-case names (`checked_headers`)."""
    head = check_signed_head(parsed, checked_headers(parsed, headers), now=now, max_skew_seconds=max_skew_seconds)
    verify_payload(head, secret, method=method, host=host, raw_path=raw_path, raw_query=raw_query, body=body)


@functools.lru_cache(maxsize=16)
def _midnight(day: str) -> int:
    """Seconds since the epoch when a `YYYYMMDD` day (ASCII digits) begins, UTC; `ValueError`
    if it names no day. Kept: every request of a day names the same one."""
    return int(datetime(int(day[:4]), int(day[4:6]), int(day[6:]), tzinfo=UTC).timestamp())


@functools.lru_cache(maxsize=64)
def _signed_at(amz_date: str) -> int:
    """The second an `X-Amz-Date` names, since the epoch; `ValueError` if it names none.
    Arithmetic on the kept day: a new `datetime` per request (and `strptime`, ~100 µs on
    a cold CPU: its locale checks and lock, bench/READING.md) cost more than the rest of
    the date check. Kept: the requests of a second name the same one."""
    if _AMZ_DATE_RE.match(amz_date) is None:
        raise ValueError(amz_date)
    hour, minute, second = int(amz_date[9:11]), int(amz_date[11:13]), int(amz_date[13:15])
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(amz_date)
    return _midnight(amz_date[:8]) + hour * 3600 + minute * 60 + second


def _check_date(amz_date: str, scope_date: str, now: float, max_skew: int) -> None:
    """`now`: seconds since the epoch."""
    try:
        signed_at = _signed_at(amz_date)
    except ValueError:
        raise refusal(InvalidSignatureException(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        ), "bad_date") from None
    if amz_date[:8] != scope_date:
        raise refusal(InvalidSignatureException(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{scope_date}' != '{amz_date[:8]}', from '{amz_date}'."
        ), "bad_date")
    skew = now - signed_at
    if -max_skew <= skew <= max_skew:
        return
    # For the refusal only: strftime is costly on a cold CPU.
    stamp = datetime.fromtimestamp(now, UTC).strftime(_AMZ_DATE)
    if skew > max_skew:
        earliest = datetime.fromtimestamp(now - max_skew, UTC).strftime(_AMZ_DATE)
        raise refusal(InvalidSignatureException(
            f"Signature expired: {amz_date} is now earlier than {earliest} ({stamp} - 5 min.)"
        ), "clock_skew")
    latest = datetime.fromtimestamp(now + max_skew, UTC).strftime(_AMZ_DATE)
    raise refusal(InvalidSignatureException(
        f"Signature not yet current: {amz_date} is still later than {latest} ({stamp} + 5 min.)"
    ), "clock_skew")
