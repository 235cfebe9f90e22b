"""An upstream that resets the connection, or never answers: a retryable 503, never a hang.

(Connection refused is `test_modes.py::test_unreachable_upstream_is_a_retryable_service_unavailable`.)
The fake upstreams are raw sockets: one accepts and resets at once (RST, not FIN),
the other reads the request and says nothing until the proxy's read timeout.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture
def upstream(request: pytest.FixtureRequest) -> Iterator[str]:
    behave: Callable[[socket.socket], None] = request.param
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
    finally:
        proxy.stop()
