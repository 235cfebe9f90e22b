"""SigV4 verification against signatures made by botocore itself."""

from __future__ import annotations

import datetime as dt
import hashlib
from unittest import mock

import botocore.auth
import botocore.awsrequest
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import InvalidSignatureException, MissingAuthenticationTokenException
from proxy.sigv4 import (
    STREAMING_PAYLOAD,
    _signed_at,
    check_signed_head,
    checked_headers,
    parse_authorization,
    verify_payload,
    verify_signature,
    verify_streaming_head,
)

HOST = "127.0.0.1:8080"
NOW = dt.datetime(2026, 11, 23, 12, 0, 0)


def _sign(path: str, body: bytes, headers: dict[str, str], *, secret: str = "s3cret", service: str = "bedrock",
          query: str = "", monkeypatch: pytest.MonkeyPatch, when: dt.datetime = NOW) -> AWSRequest:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: when)
    url = f"http://{HOST}{path}" + (f"?{query}" if query else "")
    request = AWSRequest("POST", url, data=body, headers=headers)
    SigV4Auth(Credentials("CKIATEST", secret), service, "eu-west-1").add_auth(request)
    return request


def _asgi(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Headers as an ASGI scope holds them (as the proxy and the simulator read them): names
    lower-case, bytes as sent (a client sends UTF-8)."""
    return [(name.lower().encode(), value.encode()) for name, value in headers]


def _verify(request: AWSRequest, path: str, body: bytes, *, secret: str = "s3cret", query: str = "",
            now: dt.datetime = NOW, extra: list[tuple[str, str]] | None = None) -> None:
    headers = _asgi([*request.headers.items(), *(extra or [])])
    verify_signature(
        parse_authorization(request.headers["Authorization"]), secret, method="POST", host=HOST,
        raw_path=path, raw_query=query, headers=headers, body=body, now=now.replace(tzinfo=dt.UTC),
    )


PATHS = [
    "/model/amazon.nova-lite-v1%3A0/converse",
    "/model/eu.anthropic.claude-haiku-4-5-20251001-v1:0/invoke",
    "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x-v1%3A0/invoke",
]


@pytest.mark.parametrize("path", PATHS)
def test_botocore_signatures_verify(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    body = b'{"messages":[]}'
    headers = {"Content-Type": "application/json", "X-Amzn-Bedrock-Trace": "  ENABLED   FULL "}
    request = _sign(path, body, headers, monkeypatch=monkeypatch)
    _verify(request, path, body, extra=[("user-agent", "not signed, may change"), ("amz-sdk-request", "attempt=2")])


def test_query_string_is_covered(monkeypatch: pytest.MonkeyPatch) -> None:
    request = _sign("/async-invoke", b"", {}, query="maxResults=5&statusEquals=Completed", monkeypatch=monkeypatch)
    _verify(request, "/async-invoke", b"", query="maxResults=5&statusEquals=Completed")
    with pytest.raises(InvalidSignatureException):
        _verify(request, "/async-invoke", b"", query="maxResults=6&statusEquals=Completed")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"secret": "other"}, "does not match"),
        ({"body": b'{"messages":[1]}'}, "does not match"),
        ({"path": "/model/amazon.nova-pro-v1%3A0/converse"}, "does not match"),
        ({"now": NOW + dt.timedelta(minutes=5, seconds=1)}, "Signature expired"),
        ({"now": NOW - dt.timedelta(minutes=5, seconds=1)}, "not yet current"),
    ],
)
def test_refusals(change: dict[str, object], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    body, path = b'{"messages":[]}', PATHS[0]
    request = _sign(path, body, {"Content-Type": "application/json"}, monkeypatch=monkeypatch)
    kwargs = {"secret": "s3cret", "now": NOW, **change}
    with pytest.raises(InvalidSignatureException, match=message):
        _verify(request, str(kwargs.pop("path", path)), bytes(kwargs.pop("body", body)), **kwargs)  # type: ignore[arg-type]


def test_skew_boundary_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    request = _sign(PATHS[0], b"{}", {}, monkeypatch=monkeypatch)
    _verify(request, PATHS[0], b"{}", now=NOW + dt.timedelta(minutes=5))


def test_signed_header_changed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    request = _sign(PATHS[0], b"{}", {"X-Amzn-Bedrock-Trace": "ENABLED"}, monkeypatch=monkeypatch)
    request.headers.replace_header("X-Amzn-Bedrock-Trace", "DISABLED")
    with pytest.raises(InvalidSignatureException):
        _verify(request, PATHS[0], b"{}")


@pytest.mark.parametrize("value", [" a  b ", "  spaced\tout  " * 40], ids=["kept", "long"])
def test_signed_header_values_short_and_long_verify(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A header's canonical line is kept per name and value only when short (`_line`): both
    verify, twice, and a changed one does not."""
    request = _sign(PATHS[0], b"{}", {"X-Custom": value}, monkeypatch=monkeypatch)
    for _ in range(2):
        _verify(request, PATHS[0], b"{}")
    request.headers.replace_header("X-Custom", value + "x")
    with pytest.raises(InvalidSignatureException):
        _verify(request, PATHS[0], b"{}")


@pytest.mark.parametrize(("signed_body", "sent_body"), [(b'{"a":1}', b'{"a":2}'), (b"", b"{}"), (b"{}", b"")])
def test_a_changed_body_is_refused(signed_body: bytes, sent_body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """The payload hash is the verifier's own, from the bytes received (the empty body too)."""
    request = _sign(PATHS[0], signed_body, {}, monkeypatch=monkeypatch)
    _verify(request, PATHS[0], signed_body)
    with pytest.raises(InvalidSignatureException):
        _verify(request, PATHS[0], sent_body)


@pytest.mark.parametrize("amz_date", ["", "2026-11-23T12:00:00Z", "20261123T120000", "20261323T120000Z",
                                      "2026112T1200000Z", "20261123T120000Z0", "２0261123T120000Z"])
def test_a_malformed_amz_date_is_refused(amz_date: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """X-Amz-Date is ISO 8601 basic format, `YYYYMMDDTHHMMSSZ`, and nothing looser."""
    request = _sign(PATHS[0], b"{}", {}, monkeypatch=monkeypatch)
    request.headers.replace_header("X-Amz-Date", amz_date)
    with pytest.raises(InvalidSignatureException, match="X-Amz-Date"):
        _verify(request, PATHS[0], b"{}")


def test_wrong_service_and_declared_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    request = _sign(PATHS[0], b"{}", {}, service="bedrock-runtime", monkeypatch=monkeypatch)
    with pytest.raises(InvalidSignatureException, match="correct service"):
        _verify(request, PATHS[0], b"{}")
    signed = _sign(PATHS[0], b"{}", {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}, monkeypatch=monkeypatch)
    with pytest.raises(InvalidSignatureException, match="x-amz-content-sha256"):
        _verify(signed, PATHS[0], b"{}")


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ("Basic dXNlcjpwYXNz", MissingAuthenticationTokenException),
        ("AWS4-HMAC-SHA256 Credential=A/20261123/us-east-1/bedrock/aws4_request", InvalidSignatureException),
        ("AWS4-HMAC-SHA256 Credential=A/20261123/us-east-1/bedrock/aws4_request, SignedHeaders=x-amz-date, "
         "Signature=" + "0" * 64, InvalidSignatureException),
    ],
)
def test_malformed_authorization(header: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_authorization(header)


class _Http2Signer(SigV4Auth):
    """How the AWS SDK for JavaScript signs over HTTP/2 (NodeHttp2Handler, issue #19): the
    host is the `:authority` pseudo-header, and it is signed under that name."""

    def headers_to_sign(self, request: AWSRequest) -> botocore.awsrequest.HTTPHeaders:
        headers = super().headers_to_sign(request)
        host = headers["host"]
        del headers["host"]
        headers[":authority"] = host
        return headers


def test_http2_authority_signed_instead_of_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW)
    path, body = PATHS[0], b'{"messages":[]}'
    request = AWSRequest("POST", f"http://{HOST}{path}", data=body, headers={"Content-Type": "application/json"})
    _Http2Signer(Credentials("CKIATEST", "s3cret"), "bedrock", "eu-west-1").add_auth(request)
    assert "SignedHeaders=:authority;" in request.headers["Authorization"]
    _verify(request, path, body)
    with pytest.raises(InvalidSignatureException):
        _verify(request, path, body, secret="other")


BIDI = "/model/amazon.nova-sonic-v1%3A0/invoke-with-bidirectional-stream"


def _stream_head(request: AWSRequest, secret: str = "s3cret") -> None:
    parsed = parse_authorization(request.headers["Authorization"])
    head = check_signed_head(parsed, checked_headers(parsed, _asgi(list(request.headers.items()))),
                             now=NOW.replace(tzinfo=dt.UTC))
    verify_streaming_head(head, secret, method="POST", host=HOST, raw_path=BIDI, raw_query="")


def test_a_signed_event_streams_head_verifies_with_its_declared_payload(monkeypatch: pytest.MonkeyPatch) -> None:
    """The head of InvokeModelWithBidirectionalStream signs `STREAMING-AWS4-HMAC-SHA256-EVENTS`
    in place of a body hash (proxy/event_signing.py); its events are checked one by one."""
    streaming = {"X-Amz-Content-SHA256": STREAMING_PAYLOAD, "Content-Type": "application/vnd.amazon.eventstream"}
    _stream_head(_sign(BIDI, b"", streaming, monkeypatch=monkeypatch))
    with pytest.raises(InvalidSignatureException):
        _stream_head(_sign(BIDI, b"", streaming, monkeypatch=monkeypatch), secret="other")
    with pytest.raises(InvalidSignatureException, match="must be signed with"):
        _stream_head(_sign(BIDI, b"", {}, monkeypatch=monkeypatch))  # a body hash, not a stream's
    # Declared on a request whose body is read whole, it is no hash of that body: refused.
    with pytest.raises(InvalidSignatureException):
        _verify(_sign(PATHS[0], b"{}", streaming, monkeypatch=monkeypatch), PATHS[0], b"{}")


def test_the_kept_signing_key_tells_secrets_and_days_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """The derived signing key is kept per secret and day (issue #20): a request verified
    with the right secret does not let the wrong one pass after it, nor a day's key the next."""
    body, path = b'{"messages":[]}', PATHS[0]
    for when in (NOW, NOW + dt.timedelta(days=1), NOW):
        request = _sign(path, body, {"Content-Type": "application/json"}, monkeypatch=monkeypatch, when=when)
        _verify(request, path, body, now=when)
        with pytest.raises(InvalidSignatureException, match="does not match"):
            _verify(request, path, body, secret="s3cret-not", now=when)
        _verify(request, path, body, now=when)


_SEGMENT = st.text(alphabet="abc.-_~:%2AF3 é", min_size=0, max_size=8)
_QUERY = st.lists(st.tuples(st.text(alphabet="abAB09-_.~%2F", min_size=1, max_size=5),
                            st.text(alphabet="abAB09-_.~%2F", min_size=0, max_size=5)), max_size=3)
#: Header names as clients send them (botocore signs them lower-cased), a repeated one in two spellings.
_HEADER_NAME = st.sampled_from(["Content-Type", "content-type", "Accept", "X-Amzn-Bedrock-Trace", "amz-sdk-request",
                                "amz-sdk-invocation-id", "Content-Length", "X-Custom", "x-custom", "anthropic-beta"])
_HEADER_VALUE = st.text(alphabet="aZ09 ,;=/-.\t", min_size=0, max_size=12)


@given(segments=st.lists(_SEGMENT, min_size=1, max_size=4), query=_QUERY,
       headers=st.lists(st.tuples(_HEADER_NAME, _HEADER_VALUE), max_size=6), body=st.binary(max_size=64),
       region=st.sampled_from(["us-east-1", "eu-west-1", "ap-southeast-2"]),
       secret=st.sampled_from(["s3cret", "an0ther/Secret+Key", "é-secret"]),
       token=st.sampled_from([None, "session-token"]), declared=st.booleans())
@settings(max_examples=200, deadline=None)
def test_any_request_stock_botocore_signs_verifies(segments: list[str], query: list[tuple[str, str]],
                                                   headers: list[tuple[str, str]], body: bytes, region: str,
                                                   secret: str, token: str | None, declared: bool) -> None:
    """Whatever stock `SigV4Auth` signs verifies, and with another secret does not: paths
    with dot segments and escapes, queries, repeated, spaced and differently cased headers,
    a session token, a declared payload hash; each twice, so the kept signer, key, path
    and `SignedHeaders` forms (proxy/sigv4_signer.py) are read back as well as made."""
    path = "/" + "/".join(segments)
    raw_query = "&".join(f"{key}={value}" for key, value in query)
    request = AWSRequest("POST", f"http://{HOST}{path}" + (f"?{raw_query}" if raw_query else ""), data=body)
    for name, value in headers:
        request.headers[name] = value  # HTTPHeaders: a repeated name keeps both values
    if declared:
        request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    with mock.patch.object(botocore.auth, "get_current_datetime", lambda: NOW):
        SigV4Auth(Credentials("CKIATEST", secret, token), "bedrock", region).add_auth(request)
    parsed = parse_authorization(request.headers["Authorization"])
    sent = _asgi([*request.headers.items(), ("host", HOST)])
    # As the proxy reads them: an ASGI scope's bytes, only those the checks read decoded.
    in_scope = checked_headers(parsed, sent)
    for _ in range(2):
        verify_signature(parsed, secret, method="POST", host=HOST, raw_path=path, raw_query=raw_query,
                         headers=sent, body=body, now=NOW.replace(tzinfo=dt.UTC))
        head = check_signed_head(parsed, in_scope, now=NOW.replace(tzinfo=dt.UTC))
        assert verify_payload(head, secret, method="POST", host=HOST, raw_path=path, raw_query=raw_query,
                              body=body) == hashlib.sha256(body).hexdigest()
        with pytest.raises(InvalidSignatureException, match="does not match"):
            verify_signature(parsed, secret + "x", method="POST", host=HOST, raw_path=path, raw_query=raw_query,
                             headers=sent, body=body, now=NOW.replace(tzinfo=dt.UTC))


@given(st.from_regex(r"[0-9]{4}(0[0-9]|1[0-3])[0-3][0-9]T([01][0-9]|2[0-5])[0-6][0-9][0-6][0-9]Z", fullmatch=True)
       | st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1)).map(
           lambda when: when.strftime("%Y%m%dT%H%M%SZ")))
@settings(max_examples=300, deadline=None)
def test_an_amz_date_names_the_second_strptime_reads(amz_date: str) -> None:
    """`_signed_at` reads the day kept and the time by arithmetic: the same second as
    `strptime`, and a `ValueError` for what it refuses (month 13, hour 24, second 60, 30 February)."""
    try:
        expected: float | None = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        expected = None
    for _ in range(2):
        if expected is None:
            with pytest.raises(ValueError):
                _signed_at(amz_date)
        else:
            assert _signed_at(amz_date) == expected
