"""An upstream that resets the connection, or never answers: a retryable 503, never a hang.

(Connection refused is `test_modes.py::test_unreachable_upstream_is_a_retryable_service_unavailable`.)
The fake upstreams are raw sockets: one accepts and resets at once (RST, not FIN),
the other reads the request and says nothing until the proxy's read timeout.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_PRICING
from tests.e2e.clients import bedrock_client
from tests.processes import start_proxy

NOVA = "amazon.nova-lite-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hello"}]}]


def _reset(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    conn.close()


def _silent(conn: socket.socket) -> None:
    conn.recv(65536)
    time.sleep(5)  # longer than the proxy's read timeout
    conn.close()


def _serve(behave: Callable[[socket.socket], None]) -> Iterator[str]:
    """A raw-socket upstream on a free port: `behave` runs for each connection, in a thread."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=behave, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    server.close()


@pytest.fixture
def upstream(request: pytest.FixtureRequest) -> Iterator[str]:
    yield from _serve(request.param)


@pytest.mark.parametrize("upstream", [_reset, _silent], indirect=True, ids=["reset", "read-timeout"])
def test_upstream_fault_is_a_retryable_service_unavailable(tmp_path: Path, upstream: str,
                                                           request: pytest.FixtureRequest) -> None:
    behaviour = request.node.callspec.id
    proxy = start_proxy(tmp_path, upstream, {
        "pricing": TEST_PRICING,
        "upstream": {"endpoint_url": upstream, "read_timeout": 1, "connect_timeout": 1},
    })
    try:
        client: Any = bedrock_client(proxy.issue_key("acme", "faults"), endpoint_url=proxy.url)
        started = time.monotonic()
        with pytest.raises(client.exceptions.ServiceUnavailableException) as raised:
            client.converse(modelId=NOVA, messages=MESSAGES)
        assert time.monotonic() - started < 4  # the read timeout, not the upstream's 5 s silence
        error = raised.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 503
        expected = "Timed out waiting for" if behaviour == "read-timeout" else "Could not reach"
        assert error["Error"]["Message"] == f"{expected} the upstream Bedrock endpoint."
        client.close()
        assert proxy.popen.poll() is None
        # A fresh connection's failure is not sent again, and the log says why it failed.
        cause = "timed out before answering" if behaviour == "read-timeout" else "could not be reached"
        assert cause in proxy.output()
        assert "costkeeper_upstream_retries_total 0.0" in httpx.get(f"{proxy.admin_url}/metrics", timeout=5).text
    finally:
        proxy.stop()


_CONVERSE_OK = json.dumps({
    "output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4},
    "metrics": {"latencyMs": 1},
}).encode()
_INTERNAL = json.dumps({"message": "The model failed."}).encode()


def _answer(conn: socket.socket, status: str, error_type: str | None, body: bytes) -> None:
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    head += f"x-amzn-requestid: {uuid.uuid4()}\r\n"
    if error_type:
        head += f"x-amzn-errortype: {error_type}\r\n"
    conn.sendall(head.encode() + b"\r\n" + body)


def _read_request(conn: socket.socket) -> bool:
    """One whole request (head and content-length body); False at end of stream."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        body += chunk
    return True


def _one_answer_per_connection(first_status: list[str]) -> Callable[[socket.socket], None]:
    """Answers one request per keep-alive connection (no `Connection: close`), then
    closes it when the next request arrives, before a byte of an answer.

    That is what a pooled connection the upstream closed looks like to the proxy,
    made certain: a close sent right after the answer races with the proxy's next
    request (the proxy may or may not have seen the FIN when it picks the connection
    from its pool), and a test must not depend on who wins. The first connection
    answers `first_status` (a 500, as in issue #20), the later ones a Converse 200."""
    def behave(conn: socket.socket) -> None:
        with conn:
            if not _read_request(conn):
                return
            if first_status:
                _answer(conn, first_status.pop(), "InternalServerException", _INTERNAL)
            else:
                _answer(conn, "200 OK", None, _CONVERSE_OK)
            _read_request(conn)  # the next request on the pooled connection: closed unanswered

    return behave


@pytest.fixture
def closing_upstream() -> Iterator[str]:
    yield from _serve(_one_answer_per_connection(["500 Internal Server Error"]))


def test_a_pooled_connection_the_upstream_closed_is_retried_once_on_a_fresh_one(
        tmp_path: Path, closing_upstream: str) -> None:
    """Issue #20: the request after a 500 whose connection the upstream closed got a
    503 "Could not reach", with no log line saying why. It is sent again on a fresh
    connection (nothing had been read of an answer), counted, and logged with its cause."""
    proxy = start_proxy(tmp_path, closing_upstream, {"pricing": TEST_PRICING})
    try:
        client: Any = bedrock_client(proxy.issue_key("acme", "faults"), endpoint_url=proxy.url)
        with pytest.raises(client.exceptions.InternalServerException):
            client.converse(modelId=NOVA, messages=MESSAGES)
        for _ in range(3):  # each on a connection the upstream closes at the next request
            answer = client.converse(modelId=NOVA, messages=MESSAGES)
            assert answer["output"]["message"]["content"] == [{"text": "hi"}]
        client.close()
        metrics = httpx.get(f"{proxy.admin_url}/metrics", timeout=5).text
        assert "costkeeper_upstream_retries_total 3.0" in metrics
        log = proxy.output()
        assert log.count("upstream closed a reused connection") == 3, log
        assert "ServerDisconnectedError" in log
    finally:
        proxy.stop()
