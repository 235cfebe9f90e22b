"""Bytes as Bedrock sends them: frame headers, the `p` padding, error heads;
plus the secondary operations and the introspection log."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer

from tests.simulator.harness import ACCESS_KEY, CLAUDE, NOVA, SimServer, claude_body, converse_args

_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _frames(data: bytes) -> list[Any]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return list(buffer)


def test_invoke_stream_frames(sim: SimServer, prompt: str) -> None:
    response = sim.post(f"/model/{CLAUDE}/invoke-with-response-stream", claude_body(prompt + " [[sim:words=4]]"))
    assert response.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.headers
    frames = _frames(response.content)
    assert len(frames) == 2 + 4 + 3
    for frame in frames:
        assert frame.headers == {":event-type": "chunk", ":content-type": "application/json",
                                 ":message-type": "event"}
        outer = json.loads(frame.payload)
        assert set(outer) == {"bytes", "p"} and _ALPHABET.startswith(outer["p"])
        assert "p" not in json.loads(base64.b64decode(outer["bytes"]))


def test_converse_stream_frames(sim: SimServer, prompt: str) -> None:
    response = sim.post(f"/model/{NOVA}/converse-stream", converse_args(prompt + " [[sim:words=2]]"))
    frames = _frames(response.content)
    kinds = [frame.headers[":event-type"] for frame in frames]
    assert kinds == ["messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockStop",
                     "messageStop", "metadata"]
    payloads = [json.loads(frame.payload) for frame in frames]
    assert all(_ALPHABET.startswith(payload["p"]) for payload in payloads)
    assert payloads[-1]["usage"]["serverToolUsage"] == {}
    assert list(payloads[-1]) == sorted(payloads[-1])  # Bedrock serialises keys in order


def test_error_head(sim: SimServer) -> None:
    response = sim.post(f"/model/{NOVA}/invoke", b"{}")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-amzn-errortype"] == (
        "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/")
    assert response.headers["x-amzn-requestid"]
    assert response.json() == {"message": "Malformed input request: #: required key [messages] not found, "
                                          "please reformat your input and try again."}


def test_invalid_model_id(sim: SimServer) -> None:
    response = sim.post("/model/bad..id/converse", converse_args("x"))
    assert response.status_code == 400
    assert response.json()["message"] == "The provided model identifier is invalid."


def test_apply_guardrail(bedrock: Any) -> None:
    response = bedrock.apply_guardrail(
        guardrailIdentifier="abc123xyz", guardrailVersion="DRAFT", source="INPUT",
        content=[{"text": {"text": "x" * 1500}}],
    )
    assert response["action"] == "NONE" and response["outputs"] == [] and response["assessments"] == []
    assert response["usage"]["topicPolicyUnits"] == 2
    assert response["guardrailCoverage"]["textCharacters"] == {"guarded": 1500, "total": 1500}


def test_async_invoke_round_trip(bedrock: Any) -> None:
    started = bedrock.start_async_invoke(
        modelId="amazon.nova-reel-v1:0", modelInput={"taskType": "TEXT_VIDEO"}, clientRequestToken="token-1",
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://bucket/prefix"}},
    )
    arn = started["invocationArn"]
    assert arn.startswith("arn:aws:bedrock:us-east-1:") and ":async-invoke/" in arn
    again = bedrock.start_async_invoke(
        modelId="amazon.nova-reel-v1:0", modelInput={}, clientRequestToken="token-1",
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://bucket/prefix"}},
    )
    assert again["invocationArn"] == arn
    job = bedrock.get_async_invoke(invocationArn=arn)  # ARN percent-encoded in the path
    assert job["status"] == "Completed" and job["modelArn"].endswith("foundation-model/amazon.nova-reel-v1:0")
    assert job["submitTime"].year >= 2025
    listed = bedrock.list_async_invokes()["asyncInvokeSummaries"]
    assert arn in [summary["invocationArn"] for summary in listed]
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.get_async_invoke(invocationArn=arn[:-3] + "zzz")


def test_request_log(sim: SimServer, bedrock: Any, prompt: str) -> None:
    response = bedrock.converse(modelId=NOVA, **converse_args(prompt))
    record = sim.record(response["ResponseMetadata"]["RequestId"])
    assert record["operation"] == "Converse" and record["method"] == "POST"
    assert record["path"] == "/model/us.amazon.nova-lite-v1%3A0/converse"
    assert record["model_id"] == NOVA and record["base_model"] == "amazon.nova-lite-v1:0"
    assert (record["auth"], record["access_key"], record["region"]) == ("sigv4", ACCESS_KEY, "us-east-1")
    assert record["headers"]["authorization"] == "<redacted>"
    assert record["headers"]["x-amz-date"]
    assert json.loads(record["body"])["messages"][0]["content"][0]["text"] == prompt
    assert record["usage"] == {"input_tokens": response["usage"]["inputTokens"],
                               "output_tokens": response["usage"]["outputTokens"],
                               "cache_read_tokens": 0, "cache_write_tokens": 0}
    assert (record["status"], record["outcome"]) == (200, "ok")


def test_request_log_is_bounded_and_clearable(make_sim: Any) -> None:
    server = make_sim()
    for _ in range(205):
        server.http.get(f"{server.url}/nope")
    assert len(server.requests()) == 200
    assert server.http.delete(f"{server.url}/_sim/requests").json() == {"cleared": 200}
    assert server.requests() == []
    assert server.http.get(f"{server.url}/_sim/health").json() == {"status": "ok"}
