"""botocore's SigV4 signer with what it computes from repeating arguments kept: the one
signer both signatures of a SigV4 request use, verifying the client's (`proxy.sigv4`) and
re-signing for Bedrock (`proxy.upstream`).

Every step is botocore's own method (never a second implementation of SigV4); only
its results are kept, bounded, in memory (issue #20): the derived signing key per secret
and day, the canonical path per path, a short header's canonical line per name and
value, the `SignedHeaders` value per set of names. The requests it signs (`PlainRequest`)
carry their headers in plain dicts rather than botocore's `HTTPHeaders`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

__all__ = [
    "BytesRequest",
    "KEPT_ENTRIES",
    "KeptKeySigV4Auth",
    "PlainRequest",
    "SIGNING_SERVICE",
    "SignedHeaders",
]

#: Bedrock Runtime's signing name is `bedrock`, not `bedrock-runtime` (service-2.json).
SIGNING_SERVICE = "bedrock"
#: Kept results, per secret and day (many secrets, rotated ones, past days), per path (a
#: client's made-up paths), per set of header names or per client scope: bounded. In memory only.
#: (`proxy.sigv4` bounds its per-client caches by it too.)
KEPT_ENTRIES = 1024

_NOTHING: Mapping[str, str] = MappingProxyType({})


class SignedHeaders(dict[str, list[str]]):
    """The headers a signature covers, name → values, shaped as botocore reads `headers_to_sign`
    (names, `get_all`): cheaper than a second `HTTPHeaders`, an `email.message.Message`."""

    #: `dict.get` itself: botocore asks once per header, and a method of ours was a Python call each time.
    get_all = dict.get


class BytesRequest(AWSRequest):
    """An `AWSRequest` whose body is the bytes it holds.

    botocore's `AWSRequest.body` prepares the whole request on every read (the URL,
    a copy of the headers, the body) only to return these bytes; SigV4 reads it once
    per signature to hash the payload. Both signatures (verifying the client's,
    re-signing for Bedrock) build their request from bytes, so nothing is lost.
    """

    @property
    def body(self) -> bytes:
        return bytes(self.data)


class PlainRequest(BytesRequest):
    """A request botocore signs, its headers a plain dict, the headers it signs beside it.

    It carries only what botocore sets itself (`X-Amz-Date`, a session token,
    `Authorization`) and a declared payload hash, always in botocore's own spelling:
    botocore's `HTTPHeaders` (an `email.message.Message`, case-insensitive) costs more
    than the whole rest of the request, and nothing else reads these headers. The
    headers signed are `to_sign` (the client's, when verifying), or are picked by the
    signer from `given` (re-signing: `proxy.upstream`), never from `headers`.
    """

    # What botocore's `AWSRequest` sets and `SigV4Auth` never changes: one of each, for every request.
    params: Mapping[str, str] = _NOTHING
    auth_path = None
    stream_output = False

    def __init__(self, method: str, url: str, data: bytes, *, to_sign: SignedHeaders | None = None,  # noqa: PLW0231 (AWSRequest's, minus HTTPHeaders)
                 given: Mapping[str, str] = _NOTHING, body_sha256: str | None = None) -> None:
        self.method = method
        self.url = url
        self.data = data
        self.headers: dict[str, str] = {}
        self.context: dict[str, Any] = {}
        self.to_sign = to_sign
        self.given = given
        #: `data`'s SHA-256 (hex) when it is known already (`KeptKeySigV4Auth.payload`).
        self.body_sha256 = body_sha256


#: A stock botocore signer, for the steps whose result depends on their arguments alone:
#: each is computed by botocore's own method, once, and kept.
_BOTOCORE = SigV4Auth(None, SIGNING_SERVICE, "")


@functools.lru_cache(maxsize=KEPT_ENTRIES)
def _derived(key: bytes, msg: str) -> bytes:
    """botocore's key derivation step (an HMAC of the secret, day, Region or service): four
    of a signature's five HMACs give the same result all day."""
    derived: bytes = _BOTOCORE._sign(key, msg)
    return derived


@functools.lru_cache(maxsize=KEPT_ENTRIES)
def _normalized(path: str) -> str:
    """botocore's canonical form of a path (dot segments, then `quote`): a request's path
    names its model and operation, the same few all day."""
    normalized: str = _BOTOCORE._normalize_url_path(path)
    return normalized


#: The longest header value whose canonical line `_line` keeps (SDKs' are far shorter; `KEPT_ENTRIES`
#: lines of a value this long and a name as long as `SignedHeaders=` allows: a few MiB at most).
_KEPT_VALUE_LENGTH_MAX = 256


@functools.lru_cache(maxsize=KEPT_ENTRIES)
def _line(name: str, value: str) -> str:
    """botocore's canonical line of a header of one value (`name:Trimall(value)`): most
    headers a signature covers (a content type, a host, an SDK's `attempt=1`, the second's
    `X-Amz-Date`) repeat from one request to the next, and building the lines was the
    largest step of a signature (issue #20). One that does not (an SDK's invocation id, a
    UUID) is still made once for two signatures: verifying the client's, then re-signing."""
    line: str = _BOTOCORE.canonical_headers(SignedHeaders({name: [value]}))
    return line


@functools.lru_cache(maxsize=KEPT_ENTRIES)
def _in_order(names: tuple[str, ...]) -> tuple[str, ...]:
    """Header names in the order botocore puts their canonical lines (`sorted(set(names))`)."""
    return tuple(sorted(set(names)))


@functools.lru_cache(maxsize=KEPT_ENTRIES)
def _names(names: tuple[str, ...]) -> str:
    """botocore's `SignedHeaders=` value for these header names (sorted, `;`-joined): a
    client signs the same few sets all day."""
    value: str = _BOTOCORE.signed_headers(names)
    return value


class KeptKeySigV4Auth(SigV4Auth):
    """botocore's `SigV4Auth`, its `signature()` unchanged, with what it computes from
    arguments that repeat kept (issue #20): the signing key it derives (`_sign` with
    `hex=False`: secret → day → Region → service → `aws4_request`) once per day, Region
    and secret, the canonical path per path (its `quote` was an eighth of a signature),
    a short header's canonical line per name and value, the `SignedHeaders` value per set
    of names; and the payload hash, when the request knows it (`payload`). The headers it
    signs are the request's `to_sign`. One signer serves every request of its credentials
    and Region (`proxy.sigv4._verifier`, `proxy.upstream`): nothing of a request is kept on it."""

    _normalize_url_path = staticmethod(_normalized)

    def canonical_headers(self, headers_to_sign: SignedHeaders) -> str:
        """botocore's canonical headers, line by line: botocore's line of each header
        (`SigV4Auth.canonical_headers` of that header alone), kept per name and value
        when it has one short value (`_line`), joined as botocore joins them."""
        lines = []
        for name in _in_order(tuple(headers_to_sign)):
            values = headers_to_sign[name]
            if len(values) == 1 and len(values[0]) <= _KEPT_VALUE_LENGTH_MAX:
                lines.append(_line(name, values[0]))
            else:  # kept only short: a client's long values would fill memory
                lines.append(SigV4Auth.canonical_headers(self, SignedHeaders({name: values})))
        return "\n".join(lines)

    def _sign(self, key: bytes, msg: str, hex: bool = False) -> Any:
        if hex:
            return SigV4Auth._sign(self, key, msg, True)
        return _derived(key, msg)

    def signed_headers(self, headers_to_sign: SignedHeaders) -> str:
        return _names(tuple(headers_to_sign))

    def headers_to_sign(self, request: PlainRequest) -> SignedHeaders | None:
        return request.to_sign

    def payload(self, request: PlainRequest) -> str:
        """botocore's payload hash, unless the request knows its body's already
        (`PlainRequest.body_sha256`): a verified request's body is hashed once, for its
        verification, and that hash serves its re-signing too (issue #20: Claude Code's
        bodies are 50–200 KB, ~60 µs of SHA-256 per 100 KB). botocore hashes the body in
        the cases where its answer is no hash of the body (payload signing off; a streaming
        checksum trailer, which a `PlainRequest`'s context never asks for)."""
        known = request.body_sha256
        if known is None or not self._should_sha256_sign_payload(request):
            return SigV4Auth.payload(self, request)
        return known

