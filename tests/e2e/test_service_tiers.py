"""Service tiers and latency-optimized inference are metered at what AWS bills
(issue #17 item 6): stock boto3 through a real proxy and the simulator, which
echoes the tier that served a request as Bedrock does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_PRICING
from tests.e2e.clients import bedrock_client, wait_for_event
from tests.processes import Process, Proxy, start_proxy

PRO, LITE = "amazon.nova-pro-v1:0", "amazon.nova-lite-v1:0"
PRICING = {
    **TEST_PRICING,
    PRO: {"input": 0.8, "output": 3.2, "service_tiers": {"priority": 1.75, "flex": 0.5},
          "latency_optimized": {"input": 1.0, "output": 4.0}},
}


@pytest.fixture(scope="module")
def tier_proxy(tmp_path_factory: pytest.TempPathFactory, simulator: Process) -> Iterator[Proxy]:
    config = {"pricing": PRICING, "orgs": {"acme": {"daily_quota_usd": {PRO: 5},
                                                    "apps": {"batch": {"allowed_service_tiers": ["flex"]}}}}}
    proxy = start_proxy(tmp_path_factory.mktemp("tiers"), simulator.url, config)
    yield proxy
    proxy.stop()


@pytest.fixture
def client_for(tier_proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", tier_proxy.url)
    return lambda app="chat": bedrock_client(tier_proxy.issue_key("acme", app))


def _messages(text: str = "Name three rivers.") -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


def _body(text: str = "Name three rivers.") -> bytes:
    return json.dumps({"messages": _messages(text), "inferenceConfig": {"maxTokens": 50}}).encode()


def _standard(event: Any) -> int:
    """The standard-tier cost in pico-USD (Nova Pro: $0.80 / $3.20 per 1M tokens)."""
    return event.input_tokens * 800_000 + event.output_tokens * 3_200_000


def _event(proxy: Proxy, response: dict[str, Any]) -> Any:
    return wait_for_event(proxy, response["ResponseMetadata"]["RequestId"])


def _drain(stream: Any) -> None:
    for _ in stream:
        pass


@pytest.mark.parametrize(("tier", "factor"), [("priority", 1.75), ("flex", 0.5), ("default", 1.0)])
def test_every_operation_is_metered_at_the_tier_that_served(client_for: Any, tier_proxy: Proxy, tier: str,
                                                              factor: float) -> None:
    client = client_for()
    responses = []
    response = client.converse(modelId=PRO, messages=_messages(), serviceTier={"type": tier})
    assert response["serviceTier"] == {"type": tier}
    responses.append(response)
    stream = client.converse_stream(modelId=PRO, messages=_messages(), serviceTier={"type": tier})
    _drain(stream["stream"])
    responses.append(stream)
    responses.append(client.invoke_model(modelId=PRO, body=_body(), serviceTier=tier))
    invoked = client.invoke_model_with_response_stream(modelId=PRO, body=_body(), serviceTier=tier)
    _drain(invoked["body"])
    responses.append(invoked)
    for response in responses:
        event = _event(tier_proxy, response)
        assert event.service_tier == ("" if tier == "default" else tier)
        assert event.output_tokens > 0 and event.cost_pico_usd == round(Fraction(str(factor)) * _standard(event))


def test_latency_optimized_is_metered_at_its_own_rates(client_for: Any, tier_proxy: Proxy) -> None:
    client = client_for()
    response = client.converse(modelId=PRO, messages=_messages(), performanceConfig={"latency": "optimized"})
    invoked = client.invoke_model(modelId=PRO, body=_body(), performanceConfigLatency="optimized")
    for answer in (response, invoked):
        event = _event(tier_proxy, answer)
        assert event.latency == "optimized"
        assert event.cost_pico_usd == event.input_tokens * 1_000_000 + event.output_tokens * 4_000_000


def test_metered_by_what_served_not_what_was_asked(client_for: Any, tier_proxy: Proxy) -> None:
    """Bedrock serves at standard latency once the latency-optimized quota is used up,
    and says so: the bill follows the response."""
    client = client_for()
    asked = "[[sim:served-tier=default]] [[sim:served-latency=standard]] Name three rivers."
    response = client.converse(modelId=PRO, messages=_messages(asked), serviceTier={"type": "priority"},
                               performanceConfig={"latency": "optimized"})
    stream = client.invoke_model_with_response_stream(modelId=PRO, body=_body(asked), serviceTier="priority",
                                                      performanceConfigLatency="optimized")
    _drain(stream["body"])
    for answer in (response, stream):
        event = _event(tier_proxy, answer)
        assert (event.service_tier, event.latency) == ("", "")
        assert event.cost_pico_usd == _standard(event)


def test_a_tier_without_a_price_is_refused_before_it_is_sent(client_for: Any, simulator: Process) -> None:
    client = client_for()
    marker = uuid.uuid4().hex
    with pytest.raises(client.exceptions.ValidationException, match=r"service_tiers\.priority"):
        client.converse(modelId=LITE, messages=_messages(marker), serviceTier={"type": "priority"})
    with pytest.raises(client.exceptions.ValidationException, match="latency_optimized"):
        client.invoke_model(modelId=LITE, body=_body(marker), performanceConfigLatency="optimized")
    seen = httpx.get(f"{simulator.url}/_sim/requests", timeout=5).json()
    assert not [record for record in seen if marker in record.get("body", "")]


def test_allowed_service_tiers_per_app(client_for: Any) -> None:
    client = client_for("batch")
    client.converse(modelId=PRO, messages=_messages(), serviceTier={"type": "flex"})
    with pytest.raises(client.exceptions.AccessDeniedException, match="allowed_service_tiers"):
        client.converse(modelId=PRO, messages=_messages(), serviceTier={"type": "priority"})
    with pytest.raises(client.exceptions.AccessDeniedException, match="default service tier"):
        client.invoke_model(modelId=PRO, body=_body())
