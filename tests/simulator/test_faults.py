"""Authentication failures, directives and configured faults, as real clients see them."""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

import botocore.exceptions
import httpx
import pytest
import urllib3.exceptions
from botocore.eventstream import EventStreamBuffer

from tests.simulator.harness import CLAUDE, MODELS, NOVA, SimServer, converse_args, native_body

FAMILIES = sorted(MODELS)


def _error(excinfo: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_wrong_secret_is_a_signature_mismatch(sim: SimServer, prompt: str) -> None:
    client = sim.client(secret="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        client.converse(modelId=NOVA, **converse_args(prompt))
    code, message, status = _error(excinfo)
    assert (code, status) == ("InvalidSignatureException", 403)
    assert message.startswith("The request signature we calculated does not match")
    assert sim.last_request()["access_key"] == client._request_signer._credentials.access_key


def test_unknown_access_key(sim: SimServer, prompt: str) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        sim.client(access_key="AKIDUNKNOWN").converse(modelId=NOVA, **converse_args(prompt))
    assert _error(excinfo) == ("UnrecognizedClientException",
                               "The security token included in the request is invalid.", 403)


def test_missing_and_bearer_authorization(sim: SimServer, prompt: str) -> None:
    unsigned = sim.http.post(f"{sim.url}/model/{NOVA}/converse", json=converse_args(prompt))
    assert unsigned.status_code == 403
    assert unsigned.headers["x-amzn-errortype"].startswith("MissingAuthenticationTokenException:")
    wrong = sim.http.post(f"{sim.url}/model/{NOVA}/converse", json=converse_args(prompt),
                       headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert wrong.headers["x-amzn-errortype"].startswith("UnrecognizedClientException:")
    ok = sim.post(f"/model/{NOVA}/converse", converse_args(prompt))
    assert ok.status_code == 200 and ok.json()["usage"]["outputTokens"] > 0
    assert sim.last_request()["auth"] == "bearer"
    assert sim.last_request()["headers"]["authorization"] == "<redacted>"


def test_unknown_operation(sim: SimServer) -> None:
    response = sim.post("/model/x/not-an-operation", {})
    assert response.status_code == 404
    assert response.headers["x-amzn-errortype"].startswith("UnknownOperationException:")
    assert sim.post("/foo", {}).status_code == 404


@pytest.mark.parametrize("family", FAMILIES)
def test_throttle_directive(bedrock: Any, family: str, prompt: str) -> None:
    with pytest.raises(bedrock.exceptions.ThrottlingException) as excinfo:
        bedrock.invoke_model(modelId=MODELS[family],
                             body=json.dumps(native_body(family, prompt + " [[sim:throttle]]")))
    assert _error(excinfo) == ("ThrottlingException", "Too many requests, please wait before trying again.", 429)
    with pytest.raises(bedrock.exceptions.ThrottlingException):
        bedrock.converse_stream(modelId=MODELS[family], **converse_args(prompt + " [[sim:throttle]]"))


def test_validation_directive(bedrock: Any, prompt: str) -> None:
    with pytest.raises(bedrock.exceptions.ValidationException):
        bedrock.converse(modelId=NOVA, **converse_args(prompt + " [[sim:validation]]"))


@pytest.mark.parametrize("family", FAMILIES)
def test_stream_error_directive(bedrock: Any, family: str, prompt: str) -> None:
    text = prompt + " [[sim:stream-error]]"
    response = bedrock.invoke_model_with_response_stream(modelId=MODELS[family],
                                                         body=json.dumps(native_body(family, text)))
    seen = []
    # botocore leaves the connection open when it raises: close it, or it leaks.
    with closing(response["body"]), pytest.raises(botocore.exceptions.EventStreamError) as excinfo:
        for event in response["body"]:
            seen.append(event)
    assert len(seen) == 3
    assert excinfo.value.response["Error"]["Code"] == "modelStreamErrorException"
    converse = bedrock.converse_stream(modelId=MODELS[family], **converse_args(text))
    with closing(converse["stream"]), pytest.raises(botocore.exceptions.EventStreamError,
                                                    match="modelStreamErrorException"):
        list(converse["stream"])


@pytest.mark.parametrize("family", FAMILIES)
def test_cut_directive_boto3(sim: SimServer, bedrock: Any, family: str, prompt: str) -> None:
    """botocore does not wrap the failure: urllib3's ProtocolError reaches the caller."""
    response = bedrock.converse_stream(modelId=MODELS[family], **converse_args(prompt + " [[sim:cut]]"))
    seen = []
    with closing(response["stream"]), pytest.raises(urllib3.exceptions.ProtocolError,
                                                    match="Response ended prematurely"):
        for event in response["stream"]:
            seen.append(event)
    assert len(seen) == 3
    assert sim.record(response["ResponseMetadata"]["RequestId"])["outcome"] == "cut"


def test_cut_directive_httpx(sim: SimServer, prompt: str) -> None:
    """The response ends without the chunked terminator, after half a frame."""
    received = b""
    body = native_body("anthropic", prompt + " [[sim:cut]]")
    with sim.http.stream(
        "POST", f"{sim.url}/model/{CLAUDE}/invoke-with-response-stream", json=body,
        headers={"authorization": f"Bearer {sim.config.secret_key}"},
    ) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            for chunk in response.iter_raw():
                received += chunk
    buffer = EventStreamBuffer()
    buffer.add_data(received)
    assert len(list(buffer)) == 3
    (pending_total,) = struct.unpack_from(">I", bytes(buffer._data))
    assert 0 < len(buffer._data) < pending_total  # a partial frame is left over


def test_hold_and_release(sim: SimServer, bedrock: Any, prompt: str) -> None:
    """Early frames reach the client while the rest of the stream is held."""
    key = f"hold-{time.monotonic_ns()}"
    body = json.dumps(native_body("anthropic", f"{prompt} [[sim:hold={key}]]"))
    response = bedrock.invoke_model_with_response_stream(modelId=CLAUDE, body=body)
    events = iter(response["body"])
    early = [json.loads(next(events)["chunk"]["bytes"])["type"] for _ in range(3)]
    assert early == ["message_start", "content_block_start", "content_block_delta"]
    sim.wait_held(key)
    assert sim.record(response["ResponseMetadata"]["RequestId"])["outcome"] == "held"
    assert sim.release(key) == 1
    rest = [json.loads(event["chunk"]["bytes"]) for event in events]
    assert rest[-1]["type"] == "message_stop" and "amazon-bedrock-invocationMetrics" in rest[-1]


@pytest.mark.parametrize("operation", ["invoke", "converse"])
def test_hold_last_holds_the_usage_event(sim: SimServer, bedrock: Any, prompt: str, operation: str) -> None:
    """Everything but the last event (the one with the usage) reaches the client first."""
    key = f"last-{operation}-{time.monotonic_ns()}"
    if operation == "invoke":
        body = json.dumps(native_body("anthropic", f"{prompt} [[sim:hold-last={key}]]"))
        response = bedrock.invoke_model_with_response_stream(modelId=CLAUDE, body=body)
        events = iter(response["body"])
        early = [json.loads(next(events)["chunk"]["bytes"])["type"] for _ in range(5)]
        while early[-1] != "message_delta":
            early.append(json.loads(next(events)["chunk"]["bytes"])["type"])
    else:
        response = bedrock.converse_stream(modelId=NOVA, **converse_args(f"{prompt} [[sim:hold-last={key}]]"))
        events = iter(response["stream"])
        while "messageStop" not in next(events):
            pass
    sim.wait_held(key)
    assert sim.record(response["ResponseMetadata"]["RequestId"])["outcome"] == "held"
    assert sim.release(key) == 1
    last = next(events)
    if operation == "invoke":
        assert "amazon-bedrock-invocationMetrics" in json.loads(last["chunk"]["bytes"])
    else:
        assert last["metadata"]["usage"]["outputTokens"] > 0
    assert next(events, None) is None


def test_release_before_arrival_and_non_stream_hold(sim: SimServer, bedrock: Any, prompt: str) -> None:
    key = f"early-{time.monotonic_ns()}"
    assert sim.release(key) == 0  # remembered for the next request on that key
    assert bedrock.converse(modelId=NOVA, **converse_args(f"{prompt} [[sim:hold={key}]]"))["usage"]
    key = f"late-{time.monotonic_ns()}"
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(
        bedrock.converse(modelId=NOVA, **converse_args(f"{prompt} [[sim:hold={key}]]"))))
    thread.start()
    sim.wait_held(key)
    assert not result
    sim.release(key)
    thread.join(timeout=5)
    assert result["usage"]["outputTokens"] > 0


def test_configured_throttle_rate(make_sim: Callable[..., SimServer], prompt: str) -> None:
    client = make_sim(throttle_rate=1.0).client()
    with pytest.raises(client.exceptions.ThrottlingException):
        client.converse(modelId=NOVA, **converse_args(prompt))


def test_configured_error_rate(make_sim: Callable[..., SimServer], prompt: str) -> None:
    client = make_sim(error_rate=1.0).client()
    with pytest.raises(client.exceptions.InternalServerException):
        client.converse(modelId=NOVA, **converse_args(prompt))


def test_fault_rates_are_reproducible(make_sim: Callable[..., SimServer], prompt: str) -> None:
    def outcomes(server: SimServer) -> list[int]:
        return [server.post(f"/model/{NOVA}/converse", converse_args(prompt)).status_code for _ in range(20)]

    first = outcomes(make_sim(throttle_rate=0.3, error_rate=0.2, seed=7))
    second = outcomes(make_sim(throttle_rate=0.3, error_rate=0.2, seed=7))
    assert first == second and {200, 429, 500} <= set(first)


def test_latency_and_chunk_delay(make_sim: Callable[..., SimServer], prompt: str) -> None:
    server = make_sim(latency=0.2, chunk_delay=0.01)
    client = server.client()
    started = time.perf_counter()
    response = client.converse_stream(modelId=NOVA, **converse_args(prompt + " [[sim:words=10]]"))
    head = time.perf_counter() - started
    events = list(response["stream"])
    total = time.perf_counter() - started
    assert head >= 0.2
    assert total - head >= 0.01 * (len(events) - 1) * 0.8
    assert events[-1]["metadata"]["metrics"]["latencyMs"] >= 300


def test_cut_directive_non_stream(sim: SimServer, prompt: str) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        sim.post(f"/model/{NOVA}/converse", converse_args(prompt + " [[sim:cut]]"))
    assert sim.last_request()["outcome"] == "cut"
