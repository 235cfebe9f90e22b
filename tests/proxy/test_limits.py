"""The request-head check: header size and count, header characters, path segments."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from proxy.config import ConfigError, LimitsConfig
from proxy.config_load import load_config
from proxy.errors import ValidationException
from proxy.limits import check_request_head

LIMITS = LimitsConfig()
CONVERSE = "/model/us.amazon.nova-micro-v1%3A0/converse"


def boto3_head(session_token: str | None = None) -> list[tuple[bytes, bytes]]:
    """The head botocore sends for a Converse call, as uvicorn puts it in the scope."""
    request = AWSRequest("POST", "http://127.0.0.1:8080" + CONVERSE, data=b"{}", headers={
        "Content-Type": "application/json",
        "User-Agent": "Boto3/1.40.0 md/Botocore#1.40.0 ua/2.1 os/linux#6.8 md/arch#x86_64 lang/python#3.11.9 "
                      "md/pyimpl#CPython m/Z,b,D cfg/retry-mode#standard Botocore/1.40.0",
        "amz-sdk-invocation-id": "1b0a6a4c-2f0e-4a55-9a3c-8d1e0c5b7f21",
        "amz-sdk-request": "attempt=1; max=3",
        "Content-Length": "2",
    })
    SigV4Auth(Credentials("CKIAEXAMPLE000000000", "s" * 40, session_token), "bedrock", "us-east-1").add_auth(request)
    return [(name.lower().encode(), value.encode()) for name, value in request.headers.items()]


def anthropic_sdk_head() -> list[tuple[bytes, bytes]]:
    names = ["accept", "accept-encoding", "anthropic-version", "anthropic-beta", "authorization", "content-type",
             "user-agent", "x-stainless-arch", "x-stainless-async", "x-stainless-lang", "x-stainless-os",
             "x-stainless-package-version", "x-stainless-retry-count", "x-stainless-runtime",
             "x-stainless-runtime-version", "x-stainless-read-timeout", "x-stainless-timeout", "content-length",
             "host", "connection"]
    return [(name.encode(), b"v" * 60) for name in names]


@pytest.mark.parametrize("head", [boto3_head(), boto3_head("t" * 4096), anthropic_sdk_head()],
                         ids=["boto3", "boto3-session-token", "anthropic-sdk"])
def test_real_client_heads_pass_the_defaults(head: list[tuple[bytes, bytes]]) -> None:
    check_request_head(head, CONVERSE, "", LIMITS)


@pytest.mark.parametrize(
    ("headers", "phrase"),
    [
        ([(b"x-big", b"a" * 16_400)], "more than the limit of 16384 bytes"),
        ([(b"x-a", b"a" * 9000), (b"x-b", b"b" * 9000)], "more than the limit of 16384 bytes"),
        ([(b"x-h%d" % i, b"v") for i in range(101)], "101 headers, more than the limit of 100"),
        ([(b"x-a", b"a\rb")], "'x-a' contains characters other than visible ASCII"),
        ([(b"x-a", b"a\nb")], "other than visible ASCII"),
        ([(b"x-a", b"a\r\nx-injected: 1")], "other than visible ASCII"),
        ([(b"x-a", b"a\x00b")], "other than visible ASCII"),
        ([(b"x-a", b"\x1b[31m")], "other than visible ASCII"),
        ([(b"x-a", b"a\x7f")], "other than visible ASCII"),
        ([(b"x-a", "café".encode())], "other than visible ASCII"),
        ([(b"x-a", b"\xff")], "other than visible ASCII"),
        ([(b"x a", b"v")], "name is not a valid HTTP token"),
        ([(b"x\x00a", b"v")], "name is not a valid HTTP token"),
        ([("é".encode(), b"v")], "name is not a valid HTTP token"),
    ],
    ids=["one-big", "two-big", "count", "cr", "lf", "crlf-injection", "nul", "escape", "del", "utf8", "latin1",
         "space-in-name", "nul-in-name", "non-ascii-name"],
)
def test_bad_heads_are_refused(headers: list[tuple[bytes, bytes]], phrase: str) -> None:
    with pytest.raises(ValidationException, match=phrase) as raised:
        check_request_head(headers, CONVERSE, "", LIMITS)
    assert raised.value.status == 400 and raised.value.code == "ValidationException"


def test_limits_are_exact() -> None:
    limits = LimitsConfig(max_header_bytes=100, max_header_count=3)
    line = [(b"x-a", b"v" * 93)]  # 3 + 93 + len(": \r\n") = 100 bytes
    check_request_head(line, "/", "", limits)
    with pytest.raises(ValidationException):
        check_request_head([(b"x-a", b"v" * 94)], "/", "", limits)
    check_request_head([(b"a", b"")] * 3, "/", "", limits)
    with pytest.raises(ValidationException):
        check_request_head([(b"a", b"")] * 4, "/", "", limits)


def test_tabs_and_visible_ascii_pass() -> None:
    check_request_head([(b"x-a", b"a\tb c!~\"'#$%&()*+,-./:;<=>?@[\\]^_`{|}")], CONVERSE, "", LIMITS)


def test_a_value_is_never_echoed() -> None:
    with pytest.raises(ValidationException) as raised:
        check_request_head([(b"authorization", b"Bearer ck-SECRETVALUE\n")], CONVERSE, "", LIMITS)
    assert "SECRETVALUE" not in raised.value.message


@pytest.mark.parametrize(
    "path",
    [
        CONVERSE,
        "/model/amazon.nova-lite-v1:0/invoke",
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2F"
        "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse",
        "/guardrail/abc123/version/1/apply",
        "/guardrail/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aguardrail%2Fabc/version/DRAFT/apply",
        "/async-invoke",
        "/async-invoke/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aasync-invoke%2Fabc",
        "/guardrail-checks/invoke",
    ],
)
def test_bedrock_paths_pass(path: str) -> None:
    check_request_head([], path, "maxResults=10&statusEquals=Completed", LIMITS)


@pytest.mark.parametrize(
    "path",
    [
        "/async-invoke/..",
        "/async-invoke/.",
        "/guardrail/../version/1/apply",
        "/guardrail/g/version/../apply",
        "/model/../converse",
        "/model/%2e%2e/converse",
        "/model/%2E%2E/converse",
        "/model/.%2e/converse",
        "/async-invoke/%252e%252e",
        "/model/..%2F..%2Fadmin/converse",
        "/model/..%2f..%2fadmin/converse",
        "/model/x%2F..%2F..%2Fy/converse",
        "/model/..%5C..%5Cadmin/converse",
        "/model/a\\b/converse",
        "/model/a%00b/converse",
        "/model/a%0d%0aX-Injected:%201/converse",
        "/model/caf\u00e9/converse",
        "/model/a b/converse",
        "/model/a\x7fb/converse",
    ],
)
def test_traversal_and_controls_in_the_path_are_refused(path: str) -> None:
    with pytest.raises(ValidationException):
        check_request_head([], path, "", LIMITS)


@pytest.mark.parametrize("query", ["a=b c", "a=\u00e9", "a=\x00"])
def test_raw_controls_in_the_query_are_refused(query: str) -> None:
    with pytest.raises(ValidationException, match="request target"):
        check_request_head([], "/async-invoke", query, LIMITS)


def test_limits_are_configurable_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("limits: {max_header_bytes: 32768, max_header_count: 50}\n")
    limits = load_config(path, environ={}).limits
    assert (limits.max_header_bytes, limits.max_header_count) == (32768, 50)
    assert (LIMITS.max_header_bytes, LIMITS.max_header_count) == (16 * 1024, 100)
    path.write_text("limits: {max_header_count: 0}\n")
    with pytest.raises(ConfigError, match="limits.max_header_count"):
        load_config(path, environ={})


def test_the_hang_up_tail_is_bounded_and_configurable(tmp_path: Path) -> None:
    assert (LIMITS.hangup_tail_seconds, LIMITS.hangup_tail_bytes) == (2.0, 64 * 1024)
    path = tmp_path / "c.yaml"
    path.write_text("limits: {hangup_tail_seconds: 0.5, hangup_tail_bytes: 0}\n")
    limits = load_config(path, environ={}).limits
    assert (limits.hangup_tail_seconds, limits.hangup_tail_bytes) == (0.5, 0)
    path.write_text("limits: {hangup_tail_seconds: -1}\n")
    with pytest.raises(ConfigError, match="limits.hangup_tail_seconds: expected 0 .off. or more"):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/model/..%2F..%2Fetc%2Fpasswd/converse", "The provided model identifier is invalid."),
        ("/model/../converse", "The provided model identifier is invalid."),
        ("/async-invoke/%2e%2e", "The request path contains a dot segment or an encoded control character."),
        ("/guardrail/g/version/../apply", "The request path contains a dot segment or an encoded control character."),
    ],
)
def test_a_bad_model_segment_gets_bedrocks_message(path: str, message: str) -> None:
    with pytest.raises(ValidationException) as raised:
        check_request_head([], path, "", LIMITS)
    assert raised.value.message == message


@pytest.mark.parametrize("name", [b"content-type", b"content-length", b"Content-Type"])
def test_a_repeated_framing_header_is_refused(name: bytes) -> None:
    head = boto3_head()
    value = dict(head)[name.lower()]
    with pytest.raises(ValidationException, match="more than one Content-"):
        check_request_head([*head, (name, value)], CONVERSE, "", LIMITS)


def test_other_repeated_headers_pass() -> None:
    check_request_head([*boto3_head(), (b"x-amzn-trace-id", b"a"), (b"x-amzn-trace-id", b"b")], CONVERSE, "", LIMITS)
