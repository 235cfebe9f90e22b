"""`proxy.upstream.sign` signs exactly as stock botocore does over the same headers.

The signer keeps the headers in a plain dict instead of botocore's `HTTPHeaders`
(a third of a signature's cost); what Bedrock receives must not change. The
simulator's own check cannot prove it (it verifies with `proxy.sigv4`, through
the same signer, `proxy.sigv4_signer`), so the reference here is botocore's `SigV4Auth`, untouched.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any
from unittest import mock

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.sigv4 import STREAMING_PAYLOAD
from proxy.sigv4_signer import _KEPT_VALUE_LENGTH_MAX, KEPT_ENTRIES, _line
from proxy.upstream import sign

URL = "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
BODY = b'{"messages":[{"role":"user","content":[{"text":"Hi"}]}]}'
NOW = datetime.datetime(2026, 12, 5, 1, 2, 3)

HEADER_SETS = [
    pytest.param({"host": "bedrock-runtime.us-east-1.amazonaws.com", "content-type": "application/json"},
                 id="minimal"),
    pytest.param({
        "host": "bedrock-runtime.us-east-1.amazonaws.com",
        "content-type": "application/json",
        "accept": "application/json",
        "accept-encoding": "identity",
        # botocore leaves these two out of the signature (SIGNED_HEADERS_BLACKLIST).
        "user-agent": "Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux",
        "x-amzn-trace-id": "Root=1-5759e988-bd862e3fe1be46a994272793",
        "amz-sdk-invocation-id": "0b2d4c64-62a1-4a56-9f39-6d7f1a0e0f3b",
        "amz-sdk-request": "attempt=1; max=3",
        "x-amzn-bedrock-guardrailidentifier": "gr-1",
        "x-amzn-bedrock-trace": "ENABLED",
        "anthropic-beta": "a,b",
        "x-custom": "  spaced   value  ",
    }, id="boto3-like"),
]


def _freeze(monkeypatch: pytest.MonkeyPatch, now: datetime.datetime) -> None:
    """Stock botocore's clock and the signer's (`proxy.upstream._clock`), both at `now` (UTC)."""
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: now)
    monkeypatch.setattr("proxy.upstream._clock", lambda: now.replace(tzinfo=datetime.UTC).timestamp())


@pytest.fixture(autouse=True)
def _frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    _freeze(monkeypatch, NOW)


def _stock(credentials: Credentials, headers: dict[str, str], body: bytes = BODY) -> dict[str, str]:
    request = AWSRequest(method="POST", url=URL, data=body, headers=dict(headers))
    SigV4Auth(credentials, "bedrock", "us-east-1").add_auth(request)
    return {name.lower(): value for name, value in request.headers.items()}


def _ours(credentials: Credentials, headers: dict[str, str], body: bytes = BODY) -> dict[str, str]:
    signed = sign(credentials, "us-east-1", "POST", URL, dict(headers), body)
    return {name.lower(): value for name, value in signed.items()}


@pytest.mark.parametrize("headers", HEADER_SETS)
@pytest.mark.parametrize("token", [None, "session-token-value"])
def test_sign_equals_stock_botocore(headers: dict[str, str], token: str | None) -> None:
    credentials = Credentials("AKIDUPSTREAM00000001", "upstream-secret", token)
    ours = _ours(credentials, headers)
    assert ours == _stock(credentials, headers)
    assert "Signature=" in ours["authorization"] and ours["x-amz-date"] == "20261205T010203Z"
    if token:
        assert ours["x-amz-security-token"] == token


@pytest.mark.parametrize("body", [b"", b"{}", BODY * 50], ids=["empty", "tiny", "large"])
def test_the_payload_hash_equals_stock_botocore(body: bytes) -> None:
    """The signer reads the body as the bytes it holds (`BytesRequest`), not through
    botocore's request preparation; the payload hash must be the same, the empty
    body's included."""
    credentials = Credentials("AKIDUPSTREAM00000001", "upstream-secret")
    headers = {"host": "bedrock-runtime.us-east-1.amazonaws.com", "content-type": "application/json"}
    assert _ours(credentials, headers, body) == _stock(credentials, headers, body)


def test_the_kept_signing_key_follows_the_day_the_region_and_the_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The derived signing key is kept (issue #20): a new day, another Region or rotated
    credentials must each sign as stock botocore does, and again after the first."""
    headers = {"host": "bedrock-runtime.us-east-1.amazonaws.com", "content-type": "application/json"}
    first = Credentials("AKIDUPSTREAM00000001", "upstream-secret")
    rotated = Credentials("AKIDUPSTREAM00000002", "rotated-secret")
    for now in (NOW, NOW + datetime.timedelta(days=1), NOW):
        _freeze(monkeypatch, now)
        for credentials in (first, rotated, first):
            for region in ("us-east-1", "eu-west-1"):
                request = AWSRequest(method="POST", url=URL, data=BODY, headers=dict(headers))
                SigV4Auth(credentials, "bedrock", region).add_auth(request)
                stock = {name.lower(): value for name, value in request.headers.items()}
                ours = sign(credentials, region, "POST", URL, dict(headers), BODY)
                assert {name.lower(): value for name, value in ours.items()} == stock


def test_a_declared_payload_hash_signs_as_stock_botocore() -> None:
    """A signed event stream's head declares `STREAMING_PAYLOAD` (Upstream.open_stream)."""
    credentials = Credentials("AKIDUPSTREAM00000001", "upstream-secret", "session-token-value")
    headers = {"host": "bedrock-runtime.us-east-1.amazonaws.com", "content-type": "application/vnd.amazon.eventstream"}
    request = AWSRequest(method="POST", url=URL, data=b"", headers={**headers, "X-Amz-Content-SHA256": STREAMING_PAYLOAD})
    SigV4Auth(credentials, "bedrock", "us-east-1").add_auth(request)
    stock = {name.lower(): value for name, value in request.headers.items()}
    ours = sign(credentials, "us-east-1", "POST", URL, dict(headers), b"", payload_hash=STREAMING_PAYLOAD)
    assert {name.lower(): value for name, value in ours.items()} == stock


def test_the_timestamp_follows_the_clock_second_by_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """The `X-Amz-Date` string is formatted once per second (`_amz_date`): within a second,
    on the next one, and back, every signature is stock botocore's at the same time."""
    credentials = Credentials("AKIDUPSTREAM00000001", "upstream-secret")
    headers = {"host": "bedrock-runtime.us-east-1.amazonaws.com", "content-type": "application/json"}
    for now in (NOW, NOW + datetime.timedelta(microseconds=999_999), NOW + datetime.timedelta(seconds=1), NOW,
                NOW + datetime.timedelta(hours=5, microseconds=1)):
        _freeze(monkeypatch, now)
        assert _ours(credentials, headers) == _stock(credentials, headers)


_SEGMENT = st.text(alphabet="abc.-_~:%2AF3 é", min_size=0, max_size=8)


@given(segments=st.lists(_SEGMENT, min_size=1, max_size=5), query=st.sampled_from(["", "?b=2&a=1"]))
@settings(max_examples=150, deadline=None)
def test_any_path_signs_as_stock_botocore_again_and_again(segments: list[str], query: str) -> None:
    """botocore's canonical path is kept per path (`KeptKeySigV4Auth._normalize_url_path`):
    dot segments, percent escapes, reserved and non-ASCII characters sign as stock
    botocore does, the first time and from the kept form."""
    credentials = Credentials("AKIDUPSTREAM00000001", "upstream-secret")
    headers = {"host": "bedrock-runtime.us-east-1.amazonaws.com"}
    url = "https://bedrock-runtime.us-east-1.amazonaws.com/" + "/".join(segments) + query
    request = AWSRequest(method="POST", url=url, data=BODY, headers=dict(headers))
    SigV4Auth(credentials, "bedrock", "us-east-1").add_auth(request)  # the clock is frozen (autouse)
    stock = {name.lower(): value for name, value in request.headers.items()}
    for _ in range(2):
        ours = sign(credentials, "us-east-1", "POST", url, dict(headers), BODY)
        assert {name.lower(): value for name, value in ours.items()} == stock


def test_the_signers_own_clock_is_utc_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unfrozen, `X-Amz-Date` is the current UTC second (botocore's clock reads the same)."""
    monkeypatch.undo()
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0, tzinfo=None)
    signed = sign(Credentials("AKIDUPSTREAM00000001", "upstream-secret"), "us-east-1", "POST", URL,
                  {"host": "bedrock-runtime.us-east-1.amazonaws.com"}, BODY)
    after = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    assert before <= datetime.datetime.strptime(signed["X-Amz-Date"], "%Y%m%dT%H%M%SZ") <= after


#: Header names as `request_headers_for_upstream` hands them on (lower-case), botocore's
#: unsigned ones (SIGNED_HEADERS_BLACKLIST) among them.
_NAME = st.sampled_from(["content-type", "accept", "amz-sdk-invocation-id", "amz-sdk-request", "anthropic-beta",
                         "x-amzn-bedrock-trace", "x-custom", "user-agent", "x-amzn-trace-id", "expect"])
_VALUE = st.text(alphabet="aZ09 ,;=/-.\t", min_size=0, max_size=12)


@given(headers=st.dictionaries(_NAME, _VALUE, max_size=6), body=st.binary(max_size=64),
       region=st.sampled_from(["us-east-1", "eu-west-1"]), token=st.sampled_from([None, "session-token-value"]),
       streaming=st.booleans())
@settings(max_examples=150, deadline=None)
def test_any_headers_sign_as_stock_botocore_with_frozen_credentials(
        headers: dict[str, str], body: bytes, region: str, token: str | None, streaming: bool) -> None:
    """`Upstream.send` signs with aiobotocore's frozen credentials, a new tuple each time: the
    signer kept for equal ones (`proxy.upstream._signer`) signs any header set, body, Region,
    session token and declared payload as stock botocore does, again and again."""
    headers = {**headers, "host": "bedrock-runtime.us-east-1.amazonaws.com"}
    payload_hash = STREAMING_PAYLOAD if streaming else None
    request = AWSRequest(method="POST", url=URL, data=body, headers=dict(headers))
    if payload_hash is not None:
        request.headers["X-Amz-Content-SHA256"] = payload_hash
    SigV4Auth(Credentials("AKIDUPSTREAM00000001", "upstream-secret", token), "bedrock", region).add_auth(request)
    stock = {name.lower(): value for name, value in request.headers.items()}
    for _ in range(2):
        frozen = ReadOnlyCredentials("AKIDUPSTREAM00000001", "upstream-secret", token)
        ours = sign(frozen, region, "POST", URL, dict(headers), body, payload_hash=payload_hash)
        assert {name.lower(): value for name, value in ours.items()} == stock


@given(headers=st.dictionaries(_NAME, _VALUE, max_size=6), body=st.binary(max_size=256),
       region=st.sampled_from(["us-east-1", "eu-west-1"]), token=st.sampled_from([None, "session-token-value"]))
@settings(max_examples=150, deadline=None)
def test_a_known_body_hash_signs_as_stock_botocore_and_the_body_is_not_hashed_again(
        headers: dict[str, str], body: bytes, region: str, token: str | None) -> None:
    """A verified request's body hash (`body_sha256`, issue #20) is signed where stock
    botocore signs the hash it computes, declared in no header; botocore's own hashing
    never sees the body then."""
    headers = {**headers, "host": "bedrock-runtime.us-east-1.amazonaws.com"}
    credentials = Credentials("AKIDUPSTREAM00000001", "upstream-secret", token)
    request = AWSRequest(method="POST", url=URL, data=body, headers=dict(headers))
    SigV4Auth(credentials, "bedrock", region).add_auth(request)
    stock = {name.lower(): value for name, value in request.headers.items()}
    hashed: list[bytes] = []

    def counting(data: bytes = b"") -> Any:
        hashed.append(bytes(data))
        return hashlib.sha256(data)

    with mock.patch.object(botocore.auth, "sha256", counting):
        for _ in range(2):
            ours = sign(credentials, region, "POST", URL, dict(headers), body,
                        body_sha256=hashlib.sha256(body).hexdigest())
            assert {name.lower(): value for name, value in ours.items()} == stock
    assert body not in hashed or not body  # an empty body is botocore's constant, hashed by nobody


@pytest.mark.parametrize("value", [" a  b ", "  spaced\tout  " * 40], ids=["kept", "long"])
def test_header_values_short_and_long_sign_as_stock_botocore(value: str) -> None:
    """A header's canonical line is kept per name and value only when short (`_line`): both
    ways it is botocore's, the second time as the first."""
    credentials = Credentials("AKIDUPSTREAM00000001", "upstream-secret")
    headers = {"host": "bedrock-runtime.us-east-1.amazonaws.com", "x-custom": value}
    for _ in range(2):
        assert _ours(credentials, headers) == _stock(credentials, headers)



def test_kept_header_lines_are_bounded_and_a_long_value_is_never_kept() -> None:
    """A client chooses its header values: more distinct ones than `_line` keeps still
    sign as stock botocore, the oldest make way, and a value longer than
    `_KEPT_VALUE_LENGTH_MAX` is never kept at all (memory bounded either way)."""
    credentials = Credentials("AKIDUPSTREAM00000001", "upstream-secret")
    host = {"host": "bedrock-runtime.us-east-1.amazonaws.com"}
    _line.cache_clear()
    for index in range(KEPT_ENTRIES + 50):
        headers = {**host, "amz-sdk-invocation-id": f"id-{index}"}
        signed = _ours(credentials, headers)
        if index % 200 == 0:
            assert signed == _stock(credentials, headers)
    assert _line.cache_info().currsize == KEPT_ENTRIES
    _line.cache_clear()
    headers = {**host, "x-custom": " x " * _KEPT_VALUE_LENGTH_MAX}
    for _ in range(2):
        assert _ours(credentials, headers) == _stock(credentials, headers)
    assert _line.cache_info().currsize == 2  # the host's and `X-Amz-Date`'s lines alone
