"""A fallback model's answer that cannot be put back into the client's family shape.

A Claude request served by Nova is translated both ways. When what comes back
cannot be translated (a body that is not JSON or not a JSON object, a stream
chunk that is not JSON), the client's SDK must raise a Bedrock error — a 500
`InternalServerException`, or an `internalServerException` frame in the stream —
never a proxy crash or a silent empty answer, and the usage the upstream
reported is still metered.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import botocore.exceptions
import pytest

from adapters.eventstream import event_message
from tests.conftest import TEST_PRICING
from tests.e2e.clients import bedrock_client, invoke_body, wait_for_event
from tests.processes import Proxy, start_proxy

CLAUDE = "anthropic.claude-haiku-4-5-20251001-v1:0"
NOVA = "amazon.nova-lite-v1:0"


class _Garbling(BaseHTTPRequestHandler):
    """Answers 200 with what the test put in the prompt's marker: the untranslatable."""

    protocol_version = "HTTP/1.1"
    bodies = {
        "not-json": b'{"output": {"message": ',
        "list": b"[1, 2, 3]",
    }

    def do_POST(self) -> None:  # noqa: N802 — http.server's name
        request = self.rfile.read(int(self.headers.get("content-length", "0")))
        request_id = str(uuid.uuid4())
        if self.path.endswith("/invoke-with-response-stream"):
            chunk = {"bytes": base64.b64encode(b"this is not JSON").decode()}
            body, content_type = event_message("chunk", chunk), "application/vnd.amazon.eventstream"
        else:
            kind = next(name for name in self.bodies if name.encode() in request)
            body, content_type = self.bodies[kind], "application/json"
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-amzn-requestid", request_id)
        self.send_header("x-amzn-bedrock-input-token-count", "11")
        self.send_header("x-amzn-bedrock-output-token-count", "7")
        self.send_header("connection", "close")  # no keep-alive socket left open at teardown
        self.close_connection = True
        self.end_headers()
        # Noted before the body goes out: the client may look it up as soon as it has the answer.
        self.server.request_ids.append(request_id)  # type: ignore[attr-defined]
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 — quiet
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbling)
    server.request_ids = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, upstream: ThreadingHTTPServer) -> Iterator[Proxy]:
    config = {
        "pricing": TEST_PRICING,
        "models": {"smart": CLAUDE, "cheap": NOVA},
        "fallback": ["smart", "cheap"],
        "orgs": {"acme": {"daily_quota_usd": {"smart": 0}}},  # every Claude request is served by Nova
    }
    process = start_proxy(tmp_path_factory.mktemp("garble"), f"http://127.0.0.1:{upstream.server_port}", config)
    yield process
    process.stop()


@pytest.mark.parametrize("kind", ["not-json", "list"])
def test_untranslatable_body_is_an_internal_server_exception(proxy: Proxy, upstream: ThreadingHTTPServer,
                                                             kind: str) -> None:
    client = bedrock_client(proxy.issue_key("acme", "garble"), endpoint_url=proxy.url)
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        client.invoke_model(modelId=CLAUDE, body=invoke_body("anthropic", f"say {kind}"))
    client.close()
    error = raised.value.response
    assert error["Error"]["Code"] == "InternalServerException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert "could not be translated" in error["Error"]["Message"]
    event = wait_for_event(proxy, upstream.request_ids[-1])  # type: ignore[attr-defined]
    assert (event.model, event.input_tokens, event.output_tokens) == (NOVA, 11, 7)
    assert proxy.popen.poll() is None


def test_untranslatable_stream_chunk_ends_the_stream_with_an_exception(proxy: Proxy,
                                                                      upstream: ThreadingHTTPServer) -> None:
    client = bedrock_client(proxy.issue_key("acme", "garble-stream"), endpoint_url=proxy.url)
    response = client.invoke_model_with_response_stream(modelId=CLAUDE, body=invoke_body("anthropic", "hello"))
    with pytest.raises(botocore.exceptions.EventStreamError) as raised:
        for _ in response["body"]:
            pass
    response["body"].close()
    client.close()
    assert raised.value.response["Error"]["Code"] == "internalServerException"
    event = wait_for_event(proxy, upstream.request_ids[-1])  # type: ignore[attr-defined]
    assert event.model == NOVA and event.requested_model == CLAUDE
    assert proxy.popen.poll() is None
