"""A client cannot choose to be billed an estimate (issue #16, item 9).

A client that leaves a stream once its message is over (`messageStop`, Claude's
closing `message_delta`) but before the usage frame is metered from Bedrock's own
count, read from the upstream after it left, and flagged `hung_up`. One that
leaves early in a long stream is estimated once the bounded tail is read, and the
upstream is closed then, not at its end.

The simulator holds the stream before its last event (`[[sim:hold-last=KEY]]`) or
after its first ones (`[[sim:hold=KEY]]`); the test releases it only once the
proxy has logged the hang-up, so the usage frame arrives after the client left.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from metering.events import UsageEvent
from tests.conftest import TEST_PRICING
from tests.e2e.clients import CLAUDE, NOVA, bedrock_client, invoke_body, wait_for_event
from tests.processes import Process, Proxy, start_proxy, wait_for

#: Generous bounds, so the test's release always lands inside the tail.
PATIENT = {"hangup_tail_seconds": 30, "hangup_tail_bytes": 64 * 1024}
#: Tight bounds: whichever is reached first ends the tail.
BOUNDED = {"hangup_tail_seconds": 0.5, "hangup_tail_bytes": 4096}


def _start(tmp: Path, simulator: Process, limits: dict[str, Any]) -> Iterator[Proxy]:
    proxy = start_proxy(tmp, simulator.url, {"pricing": TEST_PRICING, "limits": limits})
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory, simulator: Process) -> Iterator[Proxy]:
    yield from _start(tmp_path_factory.mktemp("patient"), simulator, PATIENT)


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory, simulator: Process) -> Iterator[Proxy]:
    yield from _start(tmp_path_factory.mktemp("bounded"), simulator, BOUNDED)


def _client(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", proxy.url)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    return bedrock_client(proxy.issue_key("acme", f"hangup-{uuid.uuid4().hex[:8]}"))


def _billed(simulator: Process, request_id: str) -> dict[str, int]:
    records = httpx.get(f"{simulator.url}/_sim/requests", timeout=5).json()
    return dict(next(r for r in records if r["request_id"] == request_id)["usage"])


def _hang_up(proxy: Proxy, client: Any, stream: Any, operation: str, request_id: str) -> None:
    """Close the socket, as a process that dies does, and wait until the proxy saw it."""
    stream._raw_stream.close()
    client.close()
    line = f"client hung up on {operation} {request_id}"
    wait_for(lambda: line in proxy.output(), 10, f"the proxy to notice the hang-up ({line!r})")


def _release(simulator: Process, key: str) -> None:
    httpx.post(f"{simulator.url}/_sim/release/{key}", timeout=5)


def _assert_billed(event: UsageEvent, billed: dict[str, int]) -> None:
    assert event.hung_up and not event.estimated
    assert (event.input_tokens, event.output_tokens) == (billed["input_tokens"], billed["output_tokens"])
    assert event.cost_pico_usd > 0


def test_converse_stream_left_after_message_stop_is_metered_from_metadata(
    patient: Proxy, simulator: Process, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(patient, monkeypatch)
    key = uuid.uuid4().hex
    response = client.converse_stream(modelId=NOVA, messages=[
        {"role": "user", "content": [{"text": f"[[sim:hold-last={key}]] [[sim:words=60]] tell me"}]}])
    request_id = response["ResponseMetadata"]["RequestId"]
    events = iter(response["stream"])
    while "messageStop" not in next(events):
        pass  # the answer is complete: this client is done with the stream
    try:
        _hang_up(patient, client, response["stream"], "ConverseStream", request_id)
    finally:
        _release(simulator, key)
    _assert_billed(wait_for_event(patient, request_id), _billed(simulator, request_id))


def test_claude_stream_left_after_message_delta_is_metered_from_invocation_metrics(
    patient: Proxy, simulator: Process, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(patient, monkeypatch)
    key = uuid.uuid4().hex
    response = client.invoke_model_with_response_stream(
        modelId=CLAUDE, body=invoke_body("anthropic", f"[[sim:hold-last={key}]] [[sim:words=60]] tell me", 200))
    request_id = response["ResponseMetadata"]["RequestId"]
    events = iter(response["body"])
    while json.loads(next(events)["chunk"]["bytes"])["type"] != "message_delta":
        pass  # stop_reason and the output count are in: the SDK's message is complete
    try:
        _hang_up(patient, client, response["body"], "InvokeModelWithResponseStream", request_id)
    finally:
        _release(simulator, key)
    _assert_billed(wait_for_event(patient, request_id), _billed(simulator, request_id))


def test_early_hang_up_is_estimated_once_the_tail_times_out(
    bounded: Proxy, simulator: Process, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upstream says nothing more: the proxy closes it after the time bound and
    estimates, while the upstream is still held (it did not wait for the end)."""
    client = _client(bounded, monkeypatch)
    key = uuid.uuid4().hex
    response = client.converse_stream(modelId=NOVA, messages=[
        {"role": "user", "content": [{"text": f"[[sim:hold={key}]] [[sim:words=2000]] tell me"}]}])
    request_id = response["ResponseMetadata"]["RequestId"]
    assert "messageStart" in next(iter(response["stream"]))
    try:
        _hang_up(bounded, client, response["stream"], "ConverseStream", request_id)
        event = wait_for_event(bounded, request_id)
        assert httpx.get(f"{simulator.url}/_sim/holds", timeout=5).json().get(key) == 1
    finally:
        _release(simulator, key)
    assert event.hung_up and event.estimated and event.input_tokens > 0


def test_early_hang_up_in_a_long_stream_reads_a_bounded_tail(
    bounded: Proxy, simulator: Process, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upstream goes on after the client left: the proxy reads at most the tail's
    bytes (or time) of it, estimates, and closes it long before its end."""
    client = _client(bounded, monkeypatch)
    key = uuid.uuid4().hex
    response = client.converse_stream(modelId=NOVA, messages=[
        {"role": "user", "content": [{"text": f"[[sim:hold={key}]] [[sim:words=3000]] tell me"}]}],
        inferenceConfig={"maxTokens": 5000})
    request_id = response["ResponseMetadata"]["RequestId"]
    assert "messageStart" in next(iter(response["stream"]))
    try:
        _hang_up(bounded, client, response["stream"], "ConverseStream", request_id)
    finally:
        _release(simulator, key)
    event = wait_for_event(bounded, request_id)
    billed = _billed(simulator, request_id)
    assert event.hung_up and event.estimated
    # 4 KiB of frames hold a few hundred words at most: far from the whole answer.
    assert 0 < event.output_tokens < billed["output_tokens"] // 4
