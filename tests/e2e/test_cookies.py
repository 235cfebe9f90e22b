"""Cookies cross the proxy per request, never kept between clients.

An HTTP client session keeps a cookie jar by default; one shared by every caller
of a gateway would send the cookie one client's response set (a load balancer's
stickiness cookie, a session) on every other client's requests. The upstream
here is reached as `localhost`: a jar keeps no cookies for an IP address, so
127.0.0.1 could not show the leak.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_PRICING
from tests.processes import start_proxy

PATH = "/model/amazon.nova-lite-v1:0/converse"
BODY = json.dumps({"messages": [{"role": "user", "content": [{"text": "hello"}]}]}).encode()
ANSWER = json.dumps({
    "output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4},
    "metrics": {"latencyMs": 1},
}).encode()


class _CookieSettingUpstream:
    """Answers every request with `Set-Cookie: AWSALB=tenant-a`; keeps each request's
    `Cookie` header (None: none was sent)."""

    def __init__(self) -> None:
        self.cookies: list[str | None] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.getsockname()[1])

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:  # keep-alive: one request after another on this connection
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                fields = [line.split(b":", 1) for line in head.split(b"\r\n")[1:]]
                headers = {name.strip().lower().decode(): value.strip().decode() for name, value in fields}
                length = int(headers.get("content-length", "0"))
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                self.cookies.append(headers.get("cookie"))
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"x-amzn-requestid: 5f1c6b0e-cookie-test\r\n"
                             b"set-cookie: AWSALB=tenant-a; Path=/\r\n"
                             b"content-length: " + str(len(ANSWER)).encode() + b"\r\n\r\n" + ANSWER)


@pytest.fixture
def upstream() -> Iterator[_CookieSettingUpstream]:
    server = _CookieSettingUpstream()
    yield server
    server.close()


def test_a_cookie_set_for_one_client_is_not_sent_for_another(tmp_path: Path,
                                                              upstream: _CookieSettingUpstream) -> None:
    url = f"http://localhost:{upstream.port}"
    proxy = start_proxy(tmp_path, url, {"pricing": TEST_PRICING, "auth": {"mode": "trust"},
                                        "upstream": {"endpoint_url": url}})
    try:
        headers = {"content-type": "application/json"}
        with httpx.Client(timeout=10) as first:
            answered = first.post(f"{proxy.url}{PATH}", content=BODY, headers=headers)
        assert answered.status_code == 200, answered.text
        assert answered.headers["set-cookie"] == "AWSALB=tenant-a; Path=/"  # relayed to its client
        with httpx.Client(timeout=10) as second:
            assert second.post(f"{proxy.url}{PATH}", content=BODY, headers=headers).status_code == 200
            own = second.post(f"{proxy.url}{PATH}", content=BODY, headers={**headers, "cookie": "mine=1"})
            assert own.status_code == 200
        # The second client sent no cookie, then only its own: the proxy added none.
        assert upstream.cookies == [None, None, "mine=1"]
    finally:
        proxy.stop()
