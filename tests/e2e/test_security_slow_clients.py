"""Stalled, slow and flooding clients against a real proxy process, over raw sockets.

What an attacker without a key (or with one) tried in issue #17: declare a body of
24 MB, send all but one byte and go silent; trickle a request head one line at a
time; open a connection and say nothing. Expected: the caller is refused from the
head before any body is read, a stalled head or body is cut by the configured
timeouts (short here), a body that would not fit the in-flight budget is refused
before it is read, the proxy's memory stays bounded, and it goes on serving.

Nothing here asserts how fast: deadlines are generous (a busy machine is slow),
and each only bounds how long the test waits for something that must happen.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import botocore.auth
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_PRICING
from tests.processes import Proxy, start_proxy, start_simulator, wait_for

CONVERSE = "/model/us.amazon.nova-micro-v1%3A0/converse"
BODY = json.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}).encode()
DECLARED = 24_000_000
#: The test's budget: one 24 MB body fits, two do not.
INFLIGHT = 30_000_000
#: Short timeouts, so the test does not wait long for what it must see.
HEAD_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
#: How long the test waits for something that must happen: never a measure of speed.
DEADLINE = 60.0
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("slow-clients")
    simulator = start_simulator(tmp)
    try:
        proxy = start_proxy(tmp, simulator.url, {
            "pricing": TEST_PRICING,
            "auth": {"mode": "sigv4", "key_cache_ttl": 0},
            "limits": {"head_timeout": HEAD_TIMEOUT, "body_timeout": BODY_TIMEOUT,
                       "max_inflight_body_bytes": INFLIGHT},
        })
        try:
            yield proxy, proxy.issue_key("acme", "slow")
        finally:
            proxy.stop()
    finally:
        simulator.stop()


def address(proxy: Proxy) -> tuple[str, int]:
    host, port = proxy.url.removeprefix("http://").split(":")
    return host, int(port)


def head(proxy: Proxy, *, length: int, key: dict[str, str] | None = None, body: bytes = BODY,
         when: dt.datetime | None = None, region: str = "us-east-1", monkeypatch: pytest.MonkeyPatch | None = None,
         extra: tuple[str, ...] = ()) -> bytes:
    """A request head declaring `length` body bytes; SigV4-signed (over `body`) when a key is given."""
    host = "{}:{}".format(*address(proxy))
    lines = [f"POST {CONVERSE} HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
    if key is not None:
        request = AWSRequest("POST", f"http://{host}{CONVERSE}", data=body,
                             headers={"Content-Type": "application/json"})
        if when is not None and monkeypatch is not None:
            monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: when)
        SigV4Auth(Credentials(key["AWS_ACCESS_KEY_ID"], key["AWS_SECRET_ACCESS_KEY"]), "bedrock",
                  region).add_auth(request)
        lines += [f"{name}: {value}" for name, value in request.headers.items() if name.lower() != "content-type"]
    lines += [f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(proxy: Proxy) -> socket.socket:
    return socket.create_connection(address(proxy), timeout=DEADLINE)


def read_until_closed(sock: socket.socket, within: float = DEADLINE) -> bytes:
    """Everything the proxy sends until it closes the connection; AssertionError if it
    is still open after `within` seconds."""
    received = b""
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the connection was still open after {within} s; received {received[:200]!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def status_and_error(reply: bytes) -> tuple[int, str, str]:
    """(status, x-amzn-ErrorType code, message) of a Bedrock-shaped reply."""
    head_bytes, _, body = reply.partition(b"\r\n\r\n")
    lines = head_bytes.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    code = ""
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-amzn-errortype":
            code = value.strip().decode().split(":", 1)[0]
    message = json.loads(body).get("message", "") if body.startswith(b"{") else body.decode("latin-1")
    return status, code, message


def rss_kib(proxy: Proxy, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{proxy.popen.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for the proxy process")


def inflight(proxy: Proxy) -> float:
    """The proxy's `costkeeper_inflight_body_bytes`."""
    text = httpx.get(f"{proxy.admin_url}/metrics", timeout=5).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "costkeeper_inflight_body_bytes")


def serves(proxy: Proxy, key: dict[str, str]) -> bool:
    with connect(proxy) as sock:
        sock.sendall(head(proxy, length=len(BODY), key=key, extra=("Connection: close",)) + BODY)
        return status_and_error(read_until_closed(sock))[0] == 200


def refusal_before_the_body(proxy: Proxy, request_head: bytes) -> tuple[int, str, str]:
    """Send a head declaring 24 MB and none of the body: the reply must come anyway, and
    the connection must then close (the proxy will not read a body it refused)."""
    with connect(proxy) as sock:
        sock.sendall(request_head)
        reply = read_until_closed(sock)
    assert reply, "the proxy closed the connection without an answer"
    return status_and_error(reply)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("no authorization", "MissingAuthenticationTokenException"),
        ("malformed authorization", "InvalidSignatureException"),
        ("unknown key", "UnrecognizedClientException"),
        ("revoked key", "UnrecognizedClientException"),
        ("stale date", "InvalidSignatureException"),
        ("region not served", "InvalidSignatureException"),
    ],
)
def test_the_caller_is_refused_from_the_head(env: tuple[Proxy, dict[str, str]], monkeypatch: pytest.MonkeyPatch,
                                             case: str, code: str) -> None:
    proxy, key = env
    unknown = {"AWS_ACCESS_KEY_ID": "CKIAUNKNOWNKEY000000", "AWS_SECRET_ACCESS_KEY": "x" * 40}
    if case == "revoked key":
        revoked = proxy.issue_key("acme", "revoked")
        proxy.keys("revoke", revoked["AWS_ACCESS_KEY_ID"])
    request_head = {
        "no authorization": lambda: head(proxy, length=DECLARED),
        "malformed authorization": lambda: head(proxy, length=DECLARED,
                                                extra=("Authorization: AWS4-HMAC-SHA256 Credential=nonsense",)),
        "unknown key": lambda: head(proxy, length=DECLARED, key=unknown),
        "revoked key": lambda: head(proxy, length=DECLARED, key=revoked),
        "stale date": lambda: head(proxy, length=DECLARED, key=key, monkeypatch=monkeypatch,
                                   when=dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=6)),
        "region not served": lambda: head(proxy, length=DECLARED, key=key, region="eu-west-1"),
    }[case]()
    monkeypatch.undo()  # the clock again
    status, error, _ = refusal_before_the_body(proxy, request_head)
    assert (status, error) == (403, code)
    assert serves(proxy, key)


def test_a_stalled_body_is_answered_and_closed(env: tuple[Proxy, dict[str, str]]) -> None:
    proxy, key = env
    with connect(proxy) as sock:
        sock.sendall(head(proxy, length=len(BODY), key=key) + BODY[:10])
        reply = read_until_closed(sock)
    status, code, message = status_and_error(reply)
    assert (status, code) == (408, "RequestTimeoutException"), reply[:300]
    assert "timeout" in message.lower()
    assert serves(proxy, key)


def trickle_head(sock: socket.socket) -> bytes:
    """Send a request line, then one header line every 0.3 s, never ending the head;
    what the proxy sent once it closed the connection. AssertionError if it never does."""
    sock.sendall(f"POST {CONVERSE} HTTP/1.1\r\nHost: x\r\n".encode())
    received = b""
    deadline = time.monotonic() + DEADLINE
    line = 0
    while time.monotonic() < deadline:
        try:
            sock.sendall(b"X-Trickle-%d: 1\r\n" % line)
        except (BrokenPipeError, ConnectionResetError):
            return received
        line += 1
        sock.settimeout(0.3)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the trickled head was still open after {DEADLINE} s ({line} lines)")


def test_a_slow_loris_head_is_cut(env: tuple[Proxy, dict[str, str]]) -> None:
    """A head that never ends and a connection that says nothing are both closed by
    the head timeout; the first is told why, Bedrock-shaped."""
    proxy, key = env
    with connect(proxy) as idle, connect(proxy) as slow:
        reply = trickle_head(slow)
        if reply:  # a reset can beat the answer to the client: then there is none to check
            assert status_and_error(reply)[:2] == (408, "RequestTimeoutException"), reply[:300]
        assert read_until_closed(idle) == b""
    assert serves(proxy, key)


def read_response(sock: socket.socket) -> int:
    """One response on a kept-alive connection (the proxy's error and JSON responses
    carry a Content-Length); its status."""
    sock.settimeout(DEADLINE)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed before a response"
        received += chunk
    head_bytes, _, body = received.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head_bytes.split(b"\r\n")[1:]
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed inside a response"
        body += chunk
    return int(head_bytes.split(b" ", 2)[1])


def test_an_idle_kept_alive_connection_is_left_to_the_keepalive_timeout(env: tuple[Proxy, dict[str, str]]) -> None:
    """The head timeout runs from a request's first byte: a kept-alive connection idle
    between requests (a load balancer's pool) is not cut by it, but its next head is timed."""
    proxy, key = env
    with connect(proxy) as sock:
        sock.sendall(head(proxy, length=len(BODY), key=key) + BODY)
        assert read_response(sock) == 200
        time.sleep(3 * HEAD_TIMEOUT)  # idle, as between two requests of a pool: longer than the head timeout
        sock.sendall(head(proxy, length=len(BODY), key=key) + BODY)
        assert read_response(sock) == 200
        reply = trickle_head(sock)  # a third request whose head never ends
        if reply:
            assert status_and_error(reply)[:2] == (408, "RequestTimeoutException"), reply[:300]


def test_the_inflight_budget_refuses_a_body_that_would_not_fit(env: tuple[Proxy, dict[str, str]]) -> None:
    """A slow but live upload holds 24 MB of the 30 MB budget: a second 24 MB body is
    refused before it is read (503, retryable), a small one still passes, and the
    budget is back once the first upload ends."""
    proxy, key = env
    stop = threading.Event()
    holder = connect(proxy)
    holder.sendall(head(proxy, length=DECLARED, key=key))

    def trickle() -> None:
        while not stop.is_set():
            try:
                holder.sendall(b" " * 1024)
            except OSError:
                return
            stop.wait(0.2)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        wait_for(lambda: inflight(proxy) >= DECLARED, DEADLINE, "the holder's 24 MB to be reserved")
        status, code, _ = refusal_before_the_body(proxy, head(proxy, length=DECLARED, key=key))
        assert (status, code) == (503, "ServiceUnavailableException")
        assert serves(proxy, key)
    finally:
        stop.set()
        thread.join()
        holder.close()
    # The holder's 24 MB are released: a new 24 MB body is admitted, and then times out waiting.
    wait_for(lambda: inflight(proxy) == 0, DEADLINE, "the holder's reservation to be released")
    status, code, _ = refusal_before_the_body(proxy, head(proxy, length=DECLARED, key=key))
    assert (status, code) == (408, "RequestTimeoutException")


def test_stalled_and_flooding_clients_leave_memory_bounded(env: tuple[Proxy, dict[str, str]]) -> None:
    """20 connections without credentials push 24 MB bodies, 10 with a key declare 24 MB,
    send 1 MB and stall (issue #17: RSS grew ~22.5 MB per connection and stayed). The
    proxy's peak RSS stays well below what buffering them would take, every connection
    is closed, and the proxy still serves."""
    proxy, key = env
    assert serves(proxy, key)
    before = rss_kib(proxy)
    sockets: list[socket.socket] = []
    errors: list[BaseException] = []

    def flood(sock: socket.socket, payload_bytes: int) -> None:
        block = b"x" * MIB
        try:
            sent = 0
            while sent < payload_bytes:
                sock.sendall(block[: min(MIB, payload_bytes - sent)])
                sent += MIB
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the proxy refused and closed, or stopped reading: both expected
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = []
    for _ in range(20):
        sock = connect(proxy)
        sock.sendall(head(proxy, length=DECLARED))
        sockets.append(sock)
        threads.append(threading.Thread(target=flood, args=(sock, DECLARED - 1), daemon=True))
    for _ in range(10):
        sock = connect(proxy)
        sock.sendall(head(proxy, length=DECLARED, key=key))
        sockets.append(sock)
        threads.append(threading.Thread(target=flood, args=(sock, MIB), daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert not errors, errors
    peak = rss_kib(proxy, "VmHWM")
    # Buffering the 20 floods alone would take ~450 MB; the budget allows 30 MB of bodies.
    assert (peak - before) * 1024 < 150 * MIB, f"RSS grew from {before} KiB to a peak of {peak} KiB"
    for sock in sockets:
        with sock:
            read_until_closed(sock)
    assert (rss_kib(proxy, "VmHWM") - before) * 1024 < 150 * MIB
    assert serves(proxy, key)
    assert proxy.popen.poll() is None
