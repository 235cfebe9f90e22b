"""Every InvokeModel body is governed, whatever `Content-Type` the client declares
(issue #17 item 1): stock boto3 through a real proxy process and the simulator.

Bedrock model bodies are JSON; a declared media type (in any case, or `text/plain`)
must not decide whether `allowed_models`, the max-token clamp, the rate limits and
the quota apply. A body the proxy cannot read is refused, never forwarded unread.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import TEST_PRICING
from tests.e2e.clients import bedrock_client, wait_for_event
from tests.e2e.test_auth import assert_bedrock_error, send
from tests.processes import Process, Proxy, start_proxy

PRO, LITE, MICRO = "amazon.nova-pro-v1:0", "amazon.nova-lite-v1:0", "amazon.nova-micro-v1:0"
PRICING = {**TEST_PRICING, PRO: {"input": 0.8, "output": 3.2, "cache_read": 0.2}}
#: Media types boto3 sends as given in `contentType`: none of them is exactly "application/json".
CONTENT_TYPES = ["Application/JSON", "text/plain", "APPLICATION/JSON; charset=utf-8"]


@pytest.fixture(scope="module")
def governed_proxy(tmp_path_factory: pytest.TempPathFactory, simulator: Process) -> Iterator[Proxy]:
    config = {
        "pricing": PRICING,
        "models": {"premium": PRO, "standard": LITE},
        "fallback": ["premium", "standard"],
        "model_limits": {PRO: {"max_output_tokens": 10000}, LITE: {"max_output_tokens": 10000}},
        "orgs": {
            "acme": {
                "daily_quota_usd": {"premium": 10, "standard": 10},
                "apps": {
                    "boxed": {"allowed_models": ["standard"], "max_output_tokens": 5},
                    "paced": {"rate_limits": {"standard": {"rpm": 2}}},
                },
            },
        },
    }
    proxy = start_proxy(tmp_path_factory.mktemp("governed"), simulator.url, config)
    yield proxy
    proxy.stop()


@pytest.fixture
def client_for(governed_proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", governed_proxy.url)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    return lambda app: bedrock_client(governed_proxy.issue_key("acme", app))


def _nova_body(max_tokens: int = 500) -> bytes:
    return json.dumps({
        "schemaVersion": "messages-v1",
        "messages": [{"role": "user", "content": [{"text": "Write a long story about rivers."}]}],
        "inferenceConfig": {"maxTokens": max_tokens},
    }).encode()


def _stream_usage(response: dict[str, Any]) -> int:
    output = 0
    for event in response["body"]:
        chunk = json.loads(event["chunk"]["bytes"])
        output = chunk.get("amazon-bedrock-invocationMetrics", {}).get("outputTokenCount", output)
    return int(output)


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_allowed_models_and_the_clamp_hold_for_any_declared_type(client_for: Any, content_type: str) -> None:
    client = client_for("boxed")
    with pytest.raises(client.exceptions.AccessDeniedException):  # in no chain, not allowed
        client.invoke_model(modelId=MICRO, body=_nova_body(), contentType=content_type)
    with pytest.raises(client.exceptions.AccessDeniedException):
        client.invoke_model_with_response_stream(modelId=MICRO, body=_nova_body(), contentType=content_type)
    # premium is not allowed: its chain moves the request to standard, clamped to 5 tokens.
    response = client.invoke_model(modelId=PRO, body=_nova_body(), contentType=content_type)
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-costkeeper-model-id"] == LITE
    assert int(headers["x-amzn-bedrock-output-token-count"]) <= 5
    streamed = client.invoke_model_with_response_stream(modelId=PRO, body=_nova_body(), contentType=content_type)
    assert streamed["ResponseMetadata"]["HTTPHeaders"]["x-costkeeper-model-id"] == LITE
    assert 0 < _stream_usage(streamed) <= 5


def test_rate_limits_hold_for_any_declared_type(client_for: Any) -> None:
    client = client_for("paced")
    client.invoke_model(modelId="standard", body=_nova_body(3), contentType="Application/JSON")
    _stream_usage(client.invoke_model_with_response_stream(modelId="standard", body=_nova_body(3),
                                                           contentType="text/plain"))
    with pytest.raises(client.exceptions.ThrottlingException):
        client.invoke_model(modelId="standard", body=_nova_body(3), contentType="text/plain")
    with pytest.raises(client.exceptions.ThrottlingException):
        client.invoke_model_with_response_stream(modelId="standard", body=_nova_body(3), contentType="Application/JSON")


def test_spend_counts_against_the_quota_for_any_declared_type(client_for: Any, governed_proxy: Proxy) -> None:
    client = client_for("chat")
    response = client.invoke_model(modelId="premium", body=_nova_body(20), contentType="Application/JSON")
    event = wait_for_event(governed_proxy, response["ResponseMetadata"]["RequestId"])
    assert event.model == PRO and event.cost_pico_usd > 0
    assert event.quota_scope == "acme"  # the spend is committed against the org's quota
    streamed = client.invoke_model_with_response_stream(modelId="premium", body=_nova_body(20), contentType="text/plain")
    _stream_usage(streamed)
    event = wait_for_event(governed_proxy, streamed["ResponseMetadata"]["RequestId"])
    assert event.model == PRO and event.cost_pico_usd > 0 and event.quota_scope == "acme"


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", None])
def test_a_body_that_is_not_json_is_refused_not_forwarded(client_for: Any, simulator: Process,
                                                          content_type: str | None) -> None:
    client = client_for("chat")
    extra = {} if content_type is None else {"contentType": content_type}
    marker = uuid.uuid4().hex
    with pytest.raises(client.exceptions.ValidationException, match="Malformed input request"):
        client.invoke_model(modelId="standard", body=f"\x1f\x08 {marker} not json".encode(), **extra)
    with pytest.raises(client.exceptions.ValidationException, match="Malformed input request"):
        client.invoke_model_with_response_stream(modelId="standard", body=f"plain {marker}".encode(), **extra)
    seen = httpx.get(f"{simulator.url}/_sim/requests", timeout=5).json()
    assert not [record for record in seen if marker in record.get("body", "")]  # never reached "Bedrock"


def _signed_with(proxy: Proxy, key: dict[str, str], headers: list[tuple[str, str]], body: bytes) -> httpx.Request:
    """A validly signed InvokeModel whose head carries `headers` as given (repeats kept)."""
    path = f"/model/{LITE}/invoke"
    combined: dict[str, str] = {}
    for name, value in headers:
        combined[name] = f"{combined[name]},{value}" if name in combined else value
    request = AWSRequest("POST", proxy.url + path, data=body, headers=combined)
    SigV4Auth(Credentials(key["AWS_ACCESS_KEY_ID"], key["AWS_SECRET_ACCESS_KEY"]), "bedrock",
              "us-east-1").add_auth(request)
    signed = [(name, value) for name, value in request.headers.items() if name.lower() not in combined]
    return httpx.Request("POST", proxy.url + path, headers=[*signed, *headers], content=body)


@pytest.mark.parametrize("repeated", [
    [("content-type", "text/plain"), ("content-type", "application/json")],
    [("content-type", "application/json"), ("content-type", "application/json")],
])
def test_repeated_content_type_is_refused(governed_proxy: Proxy, repeated: list[tuple[str, str]]) -> None:
    key = governed_proxy.issue_key("acme", "boxed")
    body = _nova_body()
    response = send(_signed_with(governed_proxy, key, repeated, body))
    message = assert_bedrock_error(response, 400, "ValidationException")["message"]
    assert "Content-Type" in message


def test_repeated_content_length_is_refused(governed_proxy: Proxy, tmp_path: Path) -> None:
    """Two equal `Content-Length` fields, sent on a raw socket (HTTP clients merge them).
    uvicorn's httptools parser refuses them itself, with a plain 400; under h11 the
    proxy's own head check does (tests/proxy/test_limits.py): never forwarded."""
    import socket
    from urllib.parse import urlsplit

    key = governed_proxy.issue_key("acme", "boxed")
    body = _nova_body()
    request = _signed_with(governed_proxy, key, [("content-type", "application/json")], body)
    head = [f"POST {request.url.raw_path.decode()} HTTP/1.1"]
    head += [f"{name}: {value}" for name, value in request.headers.items()
             if name.lower() not in ("content-length", "transfer-encoding")]
    head += [f"content-length: {len(body)}", f"content-length: {len(body)}", "connection: close"]
    url = urlsplit(governed_proxy.url)
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=10) as sock:
        sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    assert b" 400 " in status_line, received[:500]
    assert b"ValidationException" in rest or b"Invalid HTTP request" in rest


@pytest.mark.parametrize("literal", ["1000000000", "NaN", "Infinity", "-1", "1e400", "9" * 5000])
def test_bad_max_tokens_are_refused_before_admission(client_for: Any, literal: str) -> None:
    """A value the model cannot honour is a ValidationException naming the field, and the
    model stays available to everyone (issue #17 item 3: it used to exhaust it for the org)."""
    client = client_for("chat")
    body = ('{"schemaVersion": "messages-v1", "messages": [{"role": "user", "content": [{"text": "hi"}]}], '
            '"inferenceConfig": {"maxTokens": ' + literal + "}}").encode()
    with pytest.raises(client.exceptions.ValidationException, match=r"inferenceConfig\.maxTokens"):
        client.invoke_model(modelId="premium", body=body)
    with pytest.raises(client.exceptions.ValidationException, match=r"inferenceConfig\.maxTokens"):
        client.invoke_model_with_response_stream(modelId="premium", body=body)
    response = client.converse(modelId="premium", messages=[{"role": "user", "content": [{"text": "hi"}]}],
                               inferenceConfig={"maxTokens": 20})
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-costkeeper-model-id"] == PRO


def test_converse_max_tokens_beyond_the_model_limit_is_refused(client_for: Any) -> None:
    client = client_for("chat")
    with pytest.raises(client.exceptions.ValidationException, match="limit of 10000 output tokens"):
        client.converse(modelId="premium", messages=[{"role": "user", "content": [{"text": "hi"}]}],
                        inferenceConfig={"maxTokens": 1_000_000_000})


def test_a_compressed_body_is_refused_never_inflated(governed_proxy: Proxy, simulator: Process) -> None:
    """`Content-Encoding: gzip` over a bomb (a body padded to 16 MB, as about 16 KB): the
    proxy reads the bytes it got, refuses them as malformed, and forwards nothing."""
    key = governed_proxy.issue_key("acme", "chat")
    bomb = gzip.compress(_nova_body() + b" " * 16_000_000)
    assert len(bomb) < 100_000
    before = httpx.get(f"{simulator.url}/_sim/requests", timeout=5).json()[-1:]
    response = send(_signed_with(governed_proxy, key, [("content-type", "application/json"),
                                                       ("content-encoding", "gzip")], bomb))
    assert "Malformed input request" in assert_bedrock_error(response, 400, "ValidationException")["message"]
    assert httpx.get(f"{simulator.url}/_sim/requests", timeout=5).json()[-1:] == before  # nothing forwarded
