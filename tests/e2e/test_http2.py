"""HTTP/2 on the data port with a second client (httpx + h2, prior knowledge): the same
identity, errors, limits and metering as HTTP/1.1, concurrent streams on one connection."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import uuid
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import MAX_BODY_BYTES, TEST_PRICING
from tests.e2e.clients import NOVA, wait_for_event
from tests.processes import Process, Proxy, start_proxy, wait_for

CONVERSE = f"/model/{NOVA}/converse"
BODY = json.dumps({"messages": [{"role": "user", "content": [{"text": "hello"}]}]}).encode()


def signed(proxy: Proxy, key: dict[str, str], path: str, body: bytes) -> dict[str, str]:
    request = AWSRequest("POST", f"{proxy.url}{path}", data=body, headers={"content-type": "application/json"})
    SigV4Auth(Credentials(key["AWS_ACCESS_KEY_ID"], key["AWS_SECRET_ACCESS_KEY"]), "bedrock", "us-east-1").add_auth(
        request)
    return dict(request.headers.items())


def h2_client() -> httpx.Client:
    return httpx.Client(http1=False, http2=True, timeout=20)


def test_signed_converse_over_h2_is_metered(proxy: Proxy) -> None:
    key = proxy.issue_key("acme", "h2-python")
    with h2_client() as client:
        response = client.post(f"{proxy.url}{CONVERSE}", content=BODY, headers=signed(proxy, key, CONVERSE, BODY))
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200, response.text
    event = wait_for_event(proxy, response.headers["x-amzn-requestid"])
    assert (event.org, event.app, event.output_tokens) == ("acme", "h2-python", response.json()["usage"]["outputTokens"])


def test_errors_are_bedrock_shaped_over_h2(proxy: Proxy) -> None:
    with h2_client() as client:
        response = client.post(f"{proxy.url}{CONVERSE}", content=BODY, headers={"content-type": "application/json"})
    assert response.http_version == "HTTP/2"
    assert response.status_code == 403
    assert response.headers["x-amzn-errortype"].startswith(("MissingAuthenticationTokenException",
                                                            "InvalidSignatureException"))
    assert "message" in response.json()


def test_head_limits_apply_over_h2(proxy: Proxy) -> None:
    with h2_client() as client:
        big = client.post(f"{proxy.url}{CONVERSE}", content=BODY, headers={"x-big": "a" * 20_000})
        many = client.post(f"{proxy.url}{CONVERSE}", content=BODY, headers={f"x-many-{i}": "v" for i in range(150)})
    assert big.status_code == 400 and "more than the limit of 16384 bytes" in big.json()["message"]
    assert many.status_code == 400 and "more than the limit of 100" in many.json()["message"]
    assert big.headers["x-amzn-errortype"].startswith("ValidationException")


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "no-content-length"])
def test_body_limit_applies_over_h2(proxy: Proxy, declared: bool) -> None:
    """Refused by its declared length: the complete 400 arrives before any of the body is sent,
    then RST_STREAM(NO_ERROR) asks the client to stop sending (RFC 9113 §8.1). Driven with
    raw h2: httpx's HTTP/2 client raises when a stream ends while it is still sending, so
    whether it saw the answer first would depend on timing."""
    key = proxy.issue_key("acme", "h2-big")
    body = json.dumps({"messages": [{"role": "user", "content": [{"text": "a" * MAX_BODY_BYTES}]}]}).encode()
    port = int(proxy.url.rsplit(":", 1)[1])
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    headers = [(b":method", b"POST"), (b":path", CONVERSE.encode()), (b":scheme", b"http"),
               (b":authority", f"127.0.0.1:{port}".encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in signed(proxy, key, CONVERSE, body).items()]
    conn.send_headers(1, [*headers, (b"content-length", str(len(body)).encode())] if declared else headers)
    fields: dict[bytes, bytes] = {}
    answer, sent, reset_code, ended = b"", 0, None, False
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        while not ended and reset_code is None:
            # Declared: nothing of the body is sent; the length alone must bring the answer.
            while not declared and (size := min(conn.local_flow_control_window(1), conn.max_outbound_frame_size,
                                                len(body) - sent)) > 0:
                conn.send_data(1, body[sent:sent + size], end_stream=sent + size == len(body))
                sent += size
            sock.sendall(conn.data_to_send())
            data = sock.recv(65536)
            assert data, "the connection closed before the answer"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    fields = dict(event.headers or [])
                elif isinstance(event, h2.events.DataReceived):
                    answer += event.data or b""
                    conn.acknowledge_received_data(event.flow_controlled_length or 0, 1)
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
                elif isinstance(event, h2.events.StreamReset):
                    reset_code = event.error_code
    assert fields[b":status"] == b"400", (fields, answer)
    assert fields[b"x-amzn-errortype"].startswith(b"ValidationException")
    assert "message" in json.loads(answer)
    assert sent == (0 if declared else len(body))
    assert reset_code in (None, h2.errors.ErrorCodes.NO_ERROR)


def test_concurrent_streams_on_one_connection(proxy: Proxy) -> None:
    key = proxy.issue_key("acme", "h2-many")

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:
            return await asyncio.gather(*(
                client.post(f"{proxy.url}{CONVERSE}", content=BODY, headers=signed(proxy, key, CONVERSE, BODY))
                for _ in range(8)))

    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200] * 8
    for response in responses:
        assert wait_for_event(proxy, response.headers["x-amzn-requestid"]).app == "h2-many"


def open_stream(proxy: Proxy, key: dict[str, str], path: str, body: bytes,
                sock: socket.socket) -> tuple[h2.connection.H2Connection, str]:
    """A signed request on stream 1 of a raw HTTP/2 connection; (connection, request id)
    once the response head is in."""
    port = int(proxy.url.rsplit(":", 1)[1])
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    headers = [(b":method", b"POST"), (b":path", path.encode()), (b":scheme", b"http"),
               (b":authority", f"127.0.0.1:{port}".encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in signed(proxy, key, path, body).items()]
    conn.send_headers(1, headers)
    conn.send_data(1, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    while True:
        for event in conn.receive_data(sock.recv(65536)):
            if isinstance(event, h2.events.ResponseReceived):
                fields = dict(event.headers or [])
                assert fields[b":status"] == b"200", fields
                sock.sendall(conn.data_to_send())
                return conn, fields[b"x-amzn-requestid"].decode()
        sock.sendall(conn.data_to_send())


def held_stream_body(hold: str) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": [
        {"text": f"[[sim:hold={hold}]] [[sim:words=2000]] tell me"}]}]}).encode()


def test_cancelled_stream_is_a_hang_up(tmp_path: Path, simulator: Process) -> None:
    """RST_STREAM(CANCEL) on one stream, the connection left open (what an aborted SDK call
    sends): the proxy sees the client hang up on that request and meters it so."""
    proxy = start_proxy(tmp_path, simulator.url, {"pricing": TEST_PRICING,
                                                  "limits": {"hangup_tail_seconds": 0.5}})
    key, hold = proxy.issue_key("acme", "h2-cancel"), uuid.uuid4().hex
    port = int(proxy.url.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            conn, request_id = open_stream(proxy, key, f"/model/{NOVA}/converse-stream", held_stream_body(hold), sock)
            conn.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
            sock.sendall(conn.data_to_send())
            line = f"client hung up on ConverseStream {request_id}"
            wait_for(lambda: line in proxy.output(), 10, f"the proxy to notice the hang-up ({line!r})")
            event = wait_for_event(proxy, request_id)
        assert event.hung_up and event.estimated and event.input_tokens > 0
    finally:
        httpx.post(f"{simulator.url}/_sim/release/{hold}", timeout=5)
        proxy.stop()


def test_sigterm_sends_goaway_and_lets_an_open_stream_finish(tmp_path: Path, simulator: Process) -> None:
    proxy = start_proxy(tmp_path, simulator.url, {"pricing": TEST_PRICING})
    key, hold = proxy.issue_key("acme", "h2-drain"), uuid.uuid4().hex
    port = int(proxy.url.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            conn, request_id = open_stream(proxy, key, f"/model/{NOVA}/converse-stream", held_stream_body(hold), sock)
            proxy.popen.send_signal(signal.SIGTERM)
            body, goaway, ended = b"", False, False
            while not ended:
                data = sock.recv(65536)
                assert data, "the connection closed before the stream ended"
                # h2 refuses frames after a GOAWAY; the stream may still finish (RFC 9113 §6.8).
                conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ConnectionTerminated):
                        goaway = True
                        httpx.post(f"{simulator.url}/_sim/release/{hold}", timeout=5)
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data or b""
                        conn.acknowledge_received_data(event.flow_controlled_length or 0, 1)
                    elif isinstance(event, h2.events.StreamEnded):
                        ended = True
                sock.sendall(conn.data_to_send())
        assert goaway and b"metadata" in body
        assert proxy.popen.wait(timeout=30) == 0, proxy.output()
        event = wait_for_event(proxy, request_id)
        assert not event.hung_up and not event.estimated and event.output_tokens > 0
    finally:
        httpx.post(f"{simulator.url}/_sim/release/{hold}", timeout=5)
        proxy.stop()
