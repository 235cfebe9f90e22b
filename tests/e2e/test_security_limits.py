"""Hostile request heads against a real proxy process, over a raw socket.

Every request is correctly signed with an issued key (SigV4 covers only the
headers it names, so an extra unsigned header would otherwise pass), so only
the head check stands between it and the upstream: each must be refused with a
400 — the proxy's Bedrock-shaped `ValidationException`, or the HTTP parser's own
400 for bytes it will not parse — the simulator must receive nothing, and the
proxy must go on serving.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import TEST_PRICING
from tests.processes import Process, Proxy, start_proxy, start_simulator

CONVERSE = "/model/us.amazon.nova-micro-v1%3A0/converse"
BODY = json.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}).encode()
PARSER_400 = b"Invalid HTTP request received."


@dataclass
class Reply:
    status: int
    head: bytes
    body: bytes

    @property
    def error_type(self) -> str:
        for line in self.head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"x-amzn-errortype":
                return value.strip().decode().split(":", 1)[0]
        return ""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Proxy, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("security-limits")
    simulator = start_simulator(tmp)
    proxy = start_proxy(tmp, simulator.url, {"pricing": TEST_PRICING, "auth": {"mode": "sigv4"}})
    try:
        yield simulator, proxy, proxy.issue_key("acme", "limits")
    finally:
        proxy.stop()
        simulator.stop()


def signed_head(proxy: Proxy, key: dict[str, str], method: str, path: str, body: bytes) -> list[bytes]:
    """Header lines of a request SigV4-signed for exactly this method and raw path."""
    host = proxy.url.removeprefix("http://")
    request = AWSRequest(method, f"http://{host}{path}", data=body, headers={"Content-Type": "application/json"})
    credentials = Credentials(key["AWS_ACCESS_KEY_ID"], key["AWS_SECRET_ACCESS_KEY"])
    SigV4Auth(credentials, "bedrock", "us-east-1").add_auth(request)
    lines = [f"Host: {host}".encode()]
    lines += [f"{name}: {value}".encode() for name, value in request.headers.items()]
    return [*lines, b"Content-Length: %d" % len(body), b"Connection: close"]


def exchange(proxy: Proxy, request: bytes) -> Reply:
    host, port = proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a server may answer and close before it has read all of a huge head
        received = b""
        while chunk := _recv(sock):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), received[:200]
    return Reply(int(head.split(b" ", 2)[1]), head, body)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def send_signed(proxy: Proxy, key: dict[str, str], *, method: str = "POST", path: str = CONVERSE,
                extra: tuple[bytes, ...] = (), body: bytes = BODY) -> Reply:
    lines = [f"{method} {path} HTTP/1.1".encode(), *signed_head(proxy, key, method, path, body), *extra]
    return exchange(proxy, b"\r\n".join(lines) + b"\r\n\r\n" + body)


def sim_requests(simulator: Process) -> list[dict[str, object]]:
    records: list[dict[str, object]] = httpx.get(f"{simulator.url}/_sim/requests", timeout=5).json()
    return records


@pytest.fixture
def clean(env: tuple[Process, Proxy, dict[str, str]]) -> Iterator[tuple[Process, Proxy, dict[str, str]]]:
    """Start with an empty simulator log; end with a proxy that still serves, and the
    simulator having received nothing from the hostile request."""
    simulator, proxy, key = env
    httpx.delete(f"{simulator.url}/_sim/requests", timeout=5)
    yield env
    assert sim_requests(simulator) == [], "a refused request reached the upstream"
    assert httpx.get(f"{proxy.admin_url}/healthz", timeout=5).status_code == 200
    assert send_signed(proxy, key).status == 200
    assert len(sim_requests(simulator)) == 1
    assert proxy.popen.poll() is None


def assert_validation(reply: Reply, phrase: str) -> None:
    assert reply.status == 400, reply
    assert reply.error_type == "ValidationException", reply.head
    assert phrase in json.loads(reply.body)["message"]


def test_a_signed_request_passes(env: tuple[Process, Proxy, dict[str, str]]) -> None:
    simulator, proxy, key = env
    httpx.delete(f"{simulator.url}/_sim/requests", timeout=5)
    reply = send_signed(proxy, key, extra=(b"X-Amzn-Bedrock-Trace: ENABLED", b"X-Tab: a\tb"))
    assert reply.status == 200, reply
    assert [record["path"] for record in sim_requests(simulator)] == [CONVERSE]


@pytest.mark.parametrize(
    ("extra", "phrase"),
    [
        ((b"X-Big: " + b"a" * 20_000,), "more than the limit of 16384 bytes"),
        ((b"X-Huge: " + b"a" * 1_000_000,), "more than the limit of 16384 bytes"),
        (tuple(b"X-Part-%d: " % i + b"b" * 4000 for i in range(5)), "more than the limit of 16384 bytes"),
        (tuple(b"X-Many-%d: v" % i for i in range(150)), "more than the limit of 100"),
    ],
    ids=["20KB-header", "1MB-header", "5x4KB-headers", "150-headers"],
)
def test_oversized_heads_are_refused(clean: tuple[Process, Proxy, dict[str, str]], extra: tuple[bytes, ...],
                                     phrase: str) -> None:
    _, proxy, key = clean
    assert_validation(send_signed(proxy, key, extra=extra), phrase)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/model/..%2F..%2Fguardrail-checks%2Finvoke/converse"),
        ("POST", "/model/%2e%2e/converse"),
        ("POST", "/model/%2E%2E%2F%2E%2E%2Fasync-invoke/invoke"),
        ("POST", "/model/us.amazon.nova-micro-v1%3A0%2F..%2F..%2Fx/converse"),
        ("POST", "/model/..%5C..%5Cx/converse"),
        ("POST", "/model/%252e%252e/converse"),
        ("GET", "/async-invoke/.."),
        ("GET", "/async-invoke/%2e%2e"),
        ("GET", "/async-invoke/."),
        ("POST", "/guardrail/../version/1/apply"),
        ("POST", "/guardrail/g/version/%2E%2E/apply"),
        ("POST", "/model/a%00b/converse"),
        ("POST", "/model/a%0d%0aX-Injected:%201/converse"),
    ],
)
def test_path_traversal_is_refused(clean: tuple[Process, Proxy, dict[str, str]], method: str, path: str) -> None:
    _, proxy, key = clean
    reply = send_signed(proxy, key, method=method, path=path, body=BODY if method == "POST" else b"")
    assert reply.status == 400, reply
    assert reply.error_type == "ValidationException", reply.head


@pytest.mark.parametrize(
    "extra",
    [
        (b"X-Injected: a\rX-Evil: 1",),
        (b"X-Injected: a\nX-Evil: 1",),
        (b"X-Nul: a\x00b",),
        (b"X-Ctl: a\x01b",),
        (b"X-Esc: \x1b[2J",),
        (b"X-Del: a\x7f",),
        (b"X-Fold: a", b" folded"),
        (b"X-Utf8: caf\xc3\xa9",),
        (b"X-Latin1: \xff\xfe",),
        (b"X-Amzn-Bedrock-Trace: \xe2\x80\xae",),
        (b"Bad Name: v",),
        (b"X-N\x00me: v",),
        (b"X-\xc3\xa9: v",),
    ],
    ids=["bare-cr", "bare-lf", "nul", "ctl", "escape", "del", "obs-fold", "utf8", "latin1", "bidi-override",
         "space-in-name", "nul-in-name", "non-ascii-name"],
)
def test_header_injection_is_refused(clean: tuple[Process, Proxy, dict[str, str]], extra: tuple[bytes, ...]) -> None:
    """Refused by the proxy (Bedrock-shaped) or, for bytes HTTP/1.1 cannot carry, by the parser."""
    _, proxy, key = clean
    reply = send_signed(proxy, key, extra=extra)
    assert reply.status == 400, reply
    if reply.error_type:
        assert "visible ASCII" in json.loads(reply.body)["message"] or "HTTP token" in reply.body.decode()
    else:
        assert PARSER_400 in reply.body, reply


def test_raw_non_ascii_in_the_path_is_refused(clean: tuple[Process, Proxy, dict[str, str]]) -> None:
    _, proxy, key = clean
    lines = [b"POST /model/caf\xc3\xa9/converse HTTP/1.1", *signed_head(proxy, key, "POST", CONVERSE, BODY)]
    reply = exchange(proxy, b"\r\n".join(lines) + b"\r\n\r\n" + BODY)
    assert reply.status == 400, reply


def test_the_limits_follow_the_config(tmp_path: Path, env: tuple[Process, Proxy, dict[str, str]]) -> None:
    simulator, _, _ = env
    proxy = start_proxy(tmp_path, simulator.url, {"pricing": TEST_PRICING,
                                                  "limits": {"max_header_bytes": 64 * 1024, "max_header_count": 10}})
    try:
        key = proxy.issue_key("acme", "limits")
        assert send_signed(proxy, key, extra=(b"X-Big: " + b"a" * 40_000,)).status == 200
        # The signed head has 6 fields (host, content-type, x-amz-date, authorization,
        # content-length, connection): 4 more is the limit, 5 more is over it.
        assert send_signed(proxy, key, extra=tuple(b"X-More-%d: 1" % i for i in range(4))).status == 200
        assert_validation(send_signed(proxy, key, extra=tuple(b"X-More-%d: 1" % i for i in range(5))),
                          "11 headers, more than the limit of 10")
    finally:
        proxy.stop()
