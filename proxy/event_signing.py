"""Signed event streams: the envelope an AWS SDK wraps around each message it sends on
InvokeModelWithBidirectionalStream, verified (the client's, with the secret Cost Keeper
issued) and made anew (the proxy's, with its own credentials), frame by frame.

What the SDK sends — read in the AWS SDK for JavaScript 3.1178.0 as installed in
tools/node-sdk (checked 2026-12-05): `@aws-sdk/middleware-eventstream`
(`eventStreamHeaderMiddleware`), `@aws-sdk/eventstream-handler-node`
(`EventStreamPayloadHandler`, `EventSigningTransformStream`), `@smithy/signature-v4`
(`signMessage`, `signEvent`) and `@smithy/core/event-streams` (`MessageEncoderStream`):

* The request head is signed as any SigV4 request, with
  `x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-EVENTS`: that literal stands for the
  payload hash in the canonical request (`proxy.sigv4.STREAMING_PAYLOAD`,
  `verify_streaming_head`).
* Each input message (`:event-type chunk`, payload `{"bytes": base64}`) is encoded whole
  and becomes the payload of an envelope frame with two headers, in this order:
  `:date` (type 8, a timestamp in ms) and `:chunk-signature` (type 6, the 32 bytes of
  the signature).
* The signature is HMAC-SHA256 with the SigV4 signing key of the envelope's date
  (`kSigning` of date, Region, service `bedrock`) over
  `AWS4-HMAC-SHA256-PAYLOAD \\n <date as YYYYMMDDTHHMMSSZ> \\n <scope> \\n <prior
  signature, hex> \\n <hex SHA-256 of the encoded :date header> \\n <hex SHA-256 of the
  payload>`. The prior signature of the first envelope is the head's `Signature=`; each
  later one chains on the envelope before it, so a frame cannot be dropped, reordered,
  replayed or altered without breaking every signature after it.
* The input ends with an envelope whose payload is empty (the end frame, signed like
  the others), then the HTTP/2 stream's END_STREAM.

Checked against real clients: the JavaScript SDK's signer makes byte-identical envelopes
(tests/proxy/test_event_signing.py), its whole session passes through the proxy
(tests/e2e/test_node_sdk.py); and the smithy Python SDK, `aws_sdk_bedrock_runtime` 0.12.0
on Python 3.12 with its awscrt HTTP/2 client over TLS (ALPN h2), held a Nova Sonic session
through the proxy and the simulator, every event verified and the session metered exactly
(by hand, 2026-12-05: CI's Python is 3.11, which that SDK does not support).

What the proxy checks, per envelope (`ChainVerifier.open`): both CRCs (botocore's
decoder), the two headers and their types, the date within the same clock skew as a
request head, and the signature recomputed with the client's secret and compared in
constant time. The key is botocore's (`SigV4Auth.signature`, the four HMACs of SigV4)
and framing is adapters/eventstream.py's: nothing of SigV4 is written twice. The proxy
then signs the same inner message with its own credentials, chained on the signature
of its own re-signed head (`ChainSigner`), which is what Bedrock verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from adapters.eventstream import encode_header, encode_message

__all__ = ["ChainSigner", "ChainVerifier", "EventChainError", "envelopes", "seed_signature"]

_ALGORITHM = "AWS4-HMAC-SHA256-PAYLOAD"
_DATE = ":date"
_SIGNATURE = ":chunk-signature"
_AMZ_DATE = "%Y%m%dT%H%M%SZ"


class EventChainError(Exception):
    """An envelope that is not one the client's key signed in this place of the chain."""


def seed_signature(authorization: str) -> str:
    """The `Signature=` of a SigV4 `Authorization` header: the first prior signature."""
    return authorization.rsplit("Signature=", 1)[-1].strip()


def envelopes(buffer: EventStreamBuffer, data: bytes) -> Iterator[EventStreamMessage]:
    """The frames `data` completes (botocore checks lengths and both CRCs)."""
    buffer.add_data(data)
    try:
        yield from buffer
    except ParserError as exc:
        raise EventChainError(f"malformed event-stream frame: {exc}") from None


class _Chain:
    """One direction's chain: the signing key's inputs and the signature before."""

    def __init__(self, credentials: Any, region: str, service: str, seed: str) -> None:
        self._signer = SigV4Auth(credentials, service, region)
        self._region = region
        self._service = service
        self.prior = seed

    def signature(self, moment: datetime, payload: bytes) -> str:
        amz_date = moment.strftime(_AMZ_DATE)
        scope = f"{amz_date[:8]}/{self._region}/{self._service}/aws4_request"
        string_to_sign = "\n".join((
            _ALGORITHM, amz_date, scope, self.prior,
            hashlib.sha256(encode_header(_DATE, moment)).hexdigest(),
            hashlib.sha256(payload).hexdigest(),
        ))
        request = AWSRequest()
        request.context["timestamp"] = amz_date
        return str(self._signer.signature(string_to_sign, request))


class ChainVerifier:
    """The client's envelopes, checked in order against its secret; `open` gives the
    message inside (b"" for the end frame)."""

    def __init__(self, access_key: str, secret: str, region: str, service: str, seed: str, *,
                 max_skew_seconds: int = 300, clock: Callable[[], float] = time.time) -> None:
        self._chain = _Chain(Credentials(access_key, secret), region, service, seed)
        self._max_skew = max_skew_seconds
        self._clock = clock

    def open(self, envelope: EventStreamMessage) -> bytes:
        headers = envelope.headers
        stamp, signature = headers.get(_DATE), headers.get(_SIGNATURE)
        if not isinstance(stamp, int) or not isinstance(signature, bytes) or len(headers) != 2:
            raise EventChainError("Each event must be signed: expected exactly the :date and :chunk-signature "
                                  "headers.")
        if abs(self._clock() - stamp / 1000) > self._max_skew:
            raise EventChainError("Signature expired: the event's :date is outside the allowed clock skew.")
        moment = datetime.fromtimestamp(stamp / 1000, UTC)
        expected = self._chain.signature(moment, envelope.payload)
        if not hmac.compare_digest(expected, signature.hex()):
            raise EventChainError("The event signature we calculated does not match the signature you provided.")
        self._chain.prior = expected
        return bytes(envelope.payload)


class ChainSigner:
    """The proxy's envelopes: each message signed with its credentials, chained on the
    signature of the head it sent."""

    def __init__(self, credentials: Any, region: str, service: str, seed: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._chain = _Chain(credentials, region, service, seed)
        self._clock = clock

    def sign(self, message: bytes) -> bytes:
        """The envelope frame around `message` (b"": the end frame)."""
        # Whole milliseconds: what the :date header carries is what is signed.
        moment = datetime.fromtimestamp(round(self._clock() * 1000) / 1000, UTC)
        signature = self._chain.signature(moment, message)
        self._chain.prior = signature
        return encode_message({_DATE: moment, _SIGNATURE: bytes.fromhex(signature)}, message)
