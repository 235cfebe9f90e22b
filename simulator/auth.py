"""Who signed a request: SigV4 with the simulator's one credential, or a bearer key.

The simulator checks signatures like Bedrock does, so a proxy that forgets to
re-sign, signs for the wrong service, or rewrites a signed header after signing
fails here exactly as it would against AWS. Verification is `proxy.sigv4`
(botocore's signer), fed with the raw path and query as received and the ASGI
scope's headers, read as the proxy reads its own (`checked_headers`): both are
served by the same uvicorn and HTTP/2 protocols (`costkeeper simulate`).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from proxy.config import SimulatorConfig
from proxy.errors import (
    AccessDeniedException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)
from proxy.event_signing import ChainVerifier
from proxy.sigv4 import (
    check_signed_head,
    checked_headers,
    parse_authorization,
    verify_signature,
    verify_streaming_head,
)

__all__ = ["Caller", "authenticate", "authenticate_stream"]

_INVALID_TOKEN = "The security token included in the request is invalid."
_DEFAULT_REGION = "us-east-1"
#: The AWS docs say API keys can't be used with the bidirectional stream; the wording of
#: Bedrock's refusal is not recorded here.
BEARER_REFUSED = "Bedrock API keys can't be used with InvokeModelWithBidirectionalStream."


@dataclass(frozen=True, slots=True)
class Caller:
    scheme: str  # "sigv4" or "bearer"
    access_key: str | None
    region: str
    #: A signed event stream's chain of event signatures, seeded by the head's.
    events: ChainVerifier | None = None


def authenticate(
    config: SimulatorConfig,
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes | None,
    record: dict[str, Any],
) -> Caller:
    """Raise the 403 Bedrock would send, or say who the caller is.

    `record` (the request-log entry) gets the claimed identity even when the
    signature is wrong: a test then sees which key a failing proxy used.
    `body` None: a signed event stream (`authenticate_stream`).
    """
    authorization = host = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"authorization":
            authorization = value.decode("latin-1")
        elif lowered == b"host":
            host = value.decode("latin-1")
    if not authorization:
        raise MissingAuthenticationTokenException("Missing Authentication Token")
    if authorization[:7].lower() == "bearer ":
        record["auth"] = "bearer"
        if not hmac.compare_digest(authorization[7:].strip().encode(), config.secret_key.encode()):
            raise UnrecognizedClientException(_INVALID_TOKEN)
        return Caller("bearer", None, config.region or _DEFAULT_REGION)
    parsed = parse_authorization(authorization)
    record["auth"] = "sigv4"
    record["access_key"] = parsed.access_key
    record["region"] = parsed.region
    if not hmac.compare_digest(parsed.access_key.encode(), config.access_key.encode()):
        raise UnrecognizedClientException(_INVALID_TOKEN)
    if config.region and parsed.region != config.region:
        raise InvalidSignatureException(
            f"Credential should be scoped to a valid region, not '{parsed.region}'. "
        )
    if body is None:
        head = check_signed_head(parsed, checked_headers(parsed, headers))
        verify_streaming_head(head, config.secret_key, method=method, host=host or "", raw_path=raw_path,
                              raw_query=raw_query)
        return Caller("sigv4", parsed.access_key, parsed.region, ChainVerifier(
            parsed.access_key, config.secret_key, parsed.region, parsed.service, parsed.signature))
    verify_signature(
        parsed,
        config.secret_key,
        method=method,
        host=host or "",
        raw_path=raw_path,
        raw_query=raw_query,
        headers=headers,
        body=body,
    )
    return Caller("sigv4", parsed.access_key, parsed.region)


def authenticate_stream(config: SimulatorConfig, *, method: str, raw_path: str, raw_query: str,
                        headers: Sequence[tuple[bytes, bytes]], record: dict[str, Any]) -> Caller:
    """`authenticate` for InvokeModelWithBidirectionalStream: the head signed for a streaming
    payload (proxy/sigv4.py), the events' chain to check as they come (`Caller.events`).
    Bedrock API keys are not accepted for it (BEDROCK_WIRE.md §1 notes)."""
    caller = authenticate(config, method=method, raw_path=raw_path, raw_query=raw_query, headers=headers,
                          body=None, record=record)
    if caller.scheme == "bearer":
        raise AccessDeniedException(BEARER_REFUSED)
    return caller
