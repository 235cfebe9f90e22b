"""Bad input gets a Bedrock-shaped error boto3 understands; upstream errors pass
through unchanged; streams reach the client as they are produced."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import botocore.exceptions
import httpx
import pytest

from tests.conftest import MAX_BODY_BYTES
from tests.e2e.clients import CLAUDE, NOVA, bedrock_client, invoke_body, wait_for_event
from tests.e2e.test_auth import assert_bedrock_error, send, signed_request
from tests.processes import Process, Proxy, start_proxy


@pytest.fixture
def client(proxy: Proxy, caller_key: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", proxy.url)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    bedrock = bedrock_client(caller_key, read_timeout=5)
    yield bedrock
    bedrock.close()


def _messages(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": prompt}]}]


def test_malformed_json_is_a_validation_exception(client: Any) -> None:
    with pytest.raises(client.exceptions.ValidationException, match="Malformed input request"):
        client.invoke_model(modelId=NOVA, body=b'{"messages": [', contentType="application/json")


def test_deeply_nested_json_is_a_validation_exception(client: Any) -> None:
    # Python's parser gives up on nesting this deep (RecursionError): a 400, not a 500.
    with pytest.raises(client.exceptions.ValidationException, match="Malformed input request"):
        client.invoke_model(modelId=NOVA, body=b"[" * 30_000 + b"]" * 30_000, contentType="application/json")


def test_body_over_the_limit_is_a_validation_exception(client: Any) -> None:
    body = invoke_body("nova", "x" * (MAX_BODY_BYTES + 1))
    with pytest.raises(client.exceptions.ValidationException, match="exceeds the limit"):
        client.invoke_model(modelId=NOVA, body=body)


def test_malformed_model_id_is_a_validation_exception(client: Any) -> None:
    with pytest.raises(client.exceptions.ValidationException, match="model identifier is invalid"):
        client.converse(modelId="../../etc/passwd", messages=_messages("hi"))


def test_unknown_operation_is_refused(proxy: Proxy, caller_key: dict[str, str]) -> None:
    request = signed_request(proxy, caller_key["AWS_ACCESS_KEY_ID"], caller_key["AWS_SECRET_ACCESS_KEY"])
    unknown = httpx.Request("POST", str(request.url).replace("/converse", "/frobnicate"),
                            headers=request.headers, content=request.content)
    assert_bedrock_error(send(unknown), 404, "UnknownOperationException")


def test_upstream_error_passes_through_unchanged(client: Any, proxy: Proxy, simulator: Process) -> None:
    with pytest.raises(client.exceptions.ThrottlingException) as raised:
        client.converse(modelId=NOVA, messages=_messages("[[sim:throttle]] hi"))
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
    # Bedrock's own type string, suffix included, and its request id reach the client.
    headers = error["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-errortype"].startswith("ThrottlingException:")
    event = wait_for_event(proxy, error["ResponseMetadata"]["RequestId"])
    assert event.status == 429 and event.input_tokens == event.output_tokens == 0
    with pytest.raises(client.exceptions.ValidationException):
        client.converse(modelId=NOVA, messages=_messages("[[sim:validation]] hi"))


def test_stream_chunks_arrive_before_the_upstream_finishes(client: Any, simulator: Process) -> None:
    """The simulator holds the stream after its first events until released: the client
    must see those events first (a buffering proxy would time the client out here)."""
    key = uuid.uuid4().hex
    response = client.converse_stream(modelId=NOVA, messages=_messages(f"[[sim:hold={key}]] go"))
    events = iter(response["stream"])
    first = next(events)
    assert "messageStart" in first
    second = next(events)
    assert "contentBlockDelta" in second
    released = httpx.post(f"{simulator.url}/_sim/release/{key}", timeout=5)
    assert released.status_code == 200
    rest = [next(iter(event)) for event in events]
    assert rest[-1] == "metadata"


def test_invoke_stream_chunks_arrive_before_the_upstream_finishes(client: Any, simulator: Process) -> None:
    key = uuid.uuid4().hex
    response = client.invoke_model_with_response_stream(
        modelId=CLAUDE, body=invoke_body("anthropic", f"[[sim:hold={key}]] go")
    )
    events = iter(response["body"])
    assert json.loads(next(events)["chunk"]["bytes"])["type"] == "message_start"
    httpx.post(f"{simulator.url}/_sim/release/{key}", timeout=5).raise_for_status()
    last = [json.loads(event["chunk"]["bytes"]) for event in events][-1]
    assert last["type"] == "message_stop"


def test_upstream_stream_cut_becomes_an_event_stream_error(client: Any, proxy: Proxy) -> None:
    response = client.converse_stream(modelId=NOVA, messages=_messages("[[sim:cut]] go"))
    seen = []
    with closing(response["stream"]), pytest.raises(botocore.exceptions.EventStreamError) as raised:
        for event in response["stream"]:
            seen.append(next(iter(event)))
    assert seen and seen[0] == "messageStart"
    assert raised.value.response["Error"]["Code"] == "serviceUnavailableException"
    event = wait_for_event(proxy, response["ResponseMetadata"]["RequestId"])
    assert event.estimated and event.input_tokens > 0
    # Logged with its cause (issue #20: every upstream failure is).
    assert f"upstream response {response['ResponseMetadata']['RequestId']} ended before its body did (" \
        in proxy.output()


def test_upstream_signature_uses_the_proxy_credentials(client: Any, simulator: Process,
                                                       caller_key: dict[str, str]) -> None:
    marker = uuid.uuid4().hex
    client.converse(modelId=NOVA, messages=_messages(f"signature check {marker}"))
    seen = httpx.get(f"{simulator.url}/_sim/requests", timeout=5).json()
    mine = [r for r in seen if r.get("operation") == "Converse" and r.get("model_id") == NOVA]
    assert mine, seen[-3:]
    signer = mine[-1]["access_key"]
    from tests.processes import SIM_ACCESS_KEY
    assert signer == SIM_ACCESS_KEY and signer != caller_key["AWS_ACCESS_KEY_ID"]


def test_wrong_upstream_credentials_are_refused_upstream(
    tmp_path: Any, simulator: Process, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The simulator checks the proxy's signature: signed with the wrong secret, it refuses,
    and its 403 reaches the client unchanged."""
    other = start_proxy(tmp_path, simulator.url, upstream_credentials=("AKIDSIMULATORTESTS01", "wrong-secret"))
    try:
        key = other.issue_key("acme", "x")
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", other.url)
        with pytest.raises(botocore.exceptions.ClientError) as raised:
            bedrock_client(key).converse(modelId=NOVA, messages=_messages("hi"))
        assert raised.value.response["Error"]["Code"] == "InvalidSignatureException"
    finally:
        other.stop()
