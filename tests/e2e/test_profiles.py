"""Model ids as Bedrock requires them, end to end (issue #16): real boto3 and
AnthropicBedrock clients, a proxy process, and two simulators standing for the
us-east-1 and eu-west-1 Bedrock Runtime endpoints.

What reaches "Bedrock" is read from the simulators' request logs: the exact path,
the Region the proxy signed for, and what was billed. A request nothing moves
goes through byte for byte; a fallback keeps the request's routing scope and form;
the cost is priced by the id actually sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import boto3
import botocore.config
import httpx
import pytest

from adapters.usage import Usage
from metering.pricing import Price, PriceTable
from tests.conftest import TEST_PRICING
from tests.e2e.clients import wait_for_event
from tests.processes import (
    Process,
    Proxy,
    start_proxy,
    start_simulator,
)

SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU = "anthropic.claude-haiku-4-5-20251001-v1:0"
OPUS = "anthropic.claude-opus-4-5-20251101-v1:0"
PRO, LITE = "amazon.nova-pro-v1:0", "amazon.nova-lite-v1:0"
GEO = {"input": 3.3, "output": 16.5, "cache_read": 0.33, "cache_write": 4.125}
HAIKU_GEO = {"input": 1.1, "output": 5.5, "cache_read": 0.11, "cache_write": 1.375}
PRICING = {
    **TEST_PRICING,
    PRO: {"input": 0.8, "output": 3.2},
    f"us.{SONNET}": GEO, f"eu.{SONNET}": GEO, f"us.{HAIKU}": HAIKU_GEO, f"eu.{HAIKU}": HAIKU_GEO,
}
SCOPES = {SONNET: ["us", "eu", "jp", "au", "global"], HAIKU: ["us", "eu", "apac", "jp", "au", "global"],
          PRO: ["in_region", "us", "eu", "apac"], LITE: ["in_region", "us", "eu", "apac"]}
MESSAGES = [{"role": "user", "content": [{"text": "Name three rivers."}]}]
ACCOUNT_ARN = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"


@pytest.fixture(scope="module")
def eu_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_simulator(tmp_path_factory.mktemp("sim-eu"), "--sim-region", "eu-west-1")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def profile_proxy(tmp_path_factory: pytest.TempPathFactory, simulator: Process, eu_simulator: Process) -> Iterator[Proxy]:
    config = {
        "upstream": {"endpoint_url": simulator.url, "read_timeout": 30, "regions": ["us-east-1", "eu-west-1"],
                     "endpoint_urls": {"eu-west-1": eu_simulator.url}},
        "pricing": PRICING,
        "model_scopes": SCOPES,
        "models": {"premium": f"us.{SONNET}", "standard": f"us.{HAIKU}"},
        "fallback": ["premium", "standard"],
        "orgs": {
            # premium is spent for the day before the first request: every request falls back.
            "spent": {"daily_quota_usd": {"premium": 0}, "apps": {"bare": {"fallback": [PRO, LITE]}}},
            "fresh": {"apps": {"bare": {"fallback": [PRO, LITE]}}},
            "spent_bare": {"daily_quota_usd": {PRO: 0}, "fallback": [PRO, LITE]},
        },
    }
    proxy = start_proxy(tmp_path_factory.mktemp("profiles"), simulator.url, config)
    yield proxy
    proxy.stop()


def _client(key: dict[str, str], url: str, region: str = "us-east-1") -> Any:
    session = boto3.session.Session(aws_access_key_id=key["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=key["AWS_SECRET_ACCESS_KEY"], region_name=region)
    config = botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"})
    return session.client("bedrock-runtime", endpoint_url=url, config=config)


def _sim_requests(sim: Process) -> list[dict[str, Any]]:
    return httpx.get(f"{sim.url}/_sim/requests").json()  # type: ignore[no-any-return]


def _reached(sim: Process, request_id: str) -> dict[str, Any]:
    """The simulator's record of the request the proxy forwarded for `request_id`."""
    for record in reversed(_sim_requests(sim)):
        if record.get("request_id") == request_id:
            return record
    raise AssertionError(f"request {request_id} never reached {sim.url}")


def _headers(response: dict[str, Any]) -> dict[str, str]:
    return response["ResponseMetadata"]["HTTPHeaders"]  # type: ignore[no-any-return]


def _priced(model: str, usage: Usage) -> int | None:
    table = PriceTable({m: Price.from_mapping(m, p) for m, p in PRICING.items()})
    return table.cost_pico_usd(model, usage)


@pytest.mark.parametrize(("org", "requested", "served", "fallback"), [
    ("fresh", f"us.{SONNET}", f"us.{SONNET}", False),
    ("fresh", f"global.{SONNET}", f"global.{SONNET}", False),
    ("fresh", ACCOUNT_ARN + f"us.{SONNET}", ACCOUNT_ARN + f"us.{SONNET}", False),
    ("spent", f"us.{SONNET}", f"us.{HAIKU}", True),
    ("spent", f"global.{SONNET}", f"global.{HAIKU}", True),
    ("spent", "premium", f"us.{HAIKU}", True),
    ("spent", ACCOUNT_ARN + f"us.{SONNET}", ACCOUNT_ARN + f"us.{HAIKU}", True),
    ("fresh", PRO, PRO, False),
    ("spent_bare", PRO, LITE, True),
])
def test_boto3_is_served_in_the_scope_it_asked_for_and_billed_for_what_was_sent(
    profile_proxy: Proxy, simulator: Process, org: str, requested: str, served: str, fallback: bool
) -> None:
    key = profile_proxy.issue_key(org, "bare" if requested == PRO and org != "spent_bare" else "app")
    response = _client(key, profile_proxy.url).converse(modelId=requested, messages=MESSAGES,
                                                        inferenceConfig={"maxTokens": 30})
    headers = _headers(response)
    assert (headers["x-costkeeper-model-id"], headers["x-costkeeper-fallback"]) == (served, str(fallback).lower())
    request_id = response["ResponseMetadata"]["RequestId"]
    record = _reached(simulator, request_id)
    # botocore encodes the id with `%3A` and `%2F`: unmoved, the path is the client's own.
    assert record["path"] == f"/model/{served.replace(':', '%3A').replace('/', '%2F')}/converse"
    event = wait_for_event(profile_proxy, request_id)
    assert event.model == served and event.requested_model == requested
    usage = response["usage"]
    assert event.cost_pico_usd == _priced(served, Usage(usage["inputTokens"], usage["outputTokens"]))


def test_an_eu_client_stays_in_the_eu_and_its_region(profile_proxy: Proxy, simulator: Process,
                                                      eu_simulator: Process) -> None:
    for org, served in (("fresh", f"eu.{SONNET}"), ("spent", f"eu.{HAIKU}")):
        client = _client(profile_proxy.issue_key(org, "app"), profile_proxy.url, region="eu-west-1")
        response = client.converse(modelId=f"eu.{SONNET}", messages=MESSAGES, inferenceConfig={"maxTokens": 20})
        assert _headers(response)["x-costkeeper-model-id"] == served
        assert _headers(response)["x-costkeeper-fallback"] == str(org == "spent").lower()
        record = _reached(eu_simulator, response["ResponseMetadata"]["RequestId"])
        assert record["region"] == "eu-west-1"  # re-signed for the Region it was sent to
        assert record["model_id"] == served
        event = wait_for_event(profile_proxy, response["ResponseMetadata"]["RequestId"])
        usage = response["usage"]
        assert event.cost_pico_usd == _priced(served, Usage(usage["inputTokens"], usage["outputTokens"]))
    assert not any((r.get("model_id") or "").startswith("eu.") for r in _sim_requests(simulator))


def test_a_signature_for_a_region_the_proxy_does_not_serve_is_refused(profile_proxy: Proxy) -> None:
    client = _client(profile_proxy.issue_key("fresh", "app"), profile_proxy.url, region="ap-south-1")
    with pytest.raises(client.exceptions.ClientError) as raised:
        client.converse(modelId=f"us.{SONNET}", messages=MESSAGES)
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] == "InvalidSignatureException" and "region" in error["Error"]["Message"]


def _anthropic(key: dict[str, str], url: str, region: str = "us-east-1") -> anthropic.AnthropicBedrock:
    return anthropic.AnthropicBedrock(base_url=url, aws_access_key=key["AWS_ACCESS_KEY_ID"],
                                      aws_secret_key=key["AWS_SECRET_ACCESS_KEY"], aws_region=region,
                                      max_retries=0)


@pytest.mark.parametrize("org", ["fresh", "spent"])
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_a_raw_inference_profile_arn_is_sent_as_spelled_or_kept_in_its_scope(
    profile_proxy: Proxy, simulator: Process, eu_simulator: Process, org: str, region: str
) -> None:
    """An ARN with raw colons (the Anthropic SDK quotes with `safe=":;"`, so only its `/`
    is `%2F`): unmoved it reaches Bedrock as the client spelled it; moved, as the same
    ARN of the fallback's profile in the same spelling; billed as that profile."""
    geo = region.split("-")[0]
    account_arn = f"arn:aws:bedrock:{region}:123456789012:inference-profile/"
    requested = f"{account_arn}{geo}.{SONNET}"
    served = requested if org == "fresh" else f"{account_arn}{geo}.{HAIKU}"
    client = _anthropic(profile_proxy.issue_key(org, "arn"), profile_proxy.url, region)
    raw = client.messages.with_raw_response.create(model=requested, max_tokens=30,
                                                   messages=[{"role": "user", "content": "Name a river."}])
    message = raw.parse()
    client.close()
    assert (raw.headers["x-costkeeper-model-id"], raw.headers["x-costkeeper-fallback"]) == (
        served, str(org == "spent").lower())
    request_id = raw.headers["x-amzn-requestid"]
    record = _reached(eu_simulator if geo == "eu" else simulator, request_id)
    assert record["path"] == f"/model/{served.replace('/', '%2F')}/invoke"  # raw `:` kept
    assert record["region"] == region
    event = wait_for_event(profile_proxy, request_id)
    assert event.model == served and event.requested_model == requested
    assert event.cost_pico_usd == _priced(served, Usage(message.usage.input_tokens, message.usage.output_tokens))


TOOLS = [{"name": "read_file", "description": "Read a file from the workspace.",
          "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}]


@pytest.mark.parametrize("org", ["fresh", "spent"])
@pytest.mark.parametrize("scope", ["us", "global"])
def test_claude_codes_traffic_answers_before_and_after_a_fallback(
    profile_proxy: Proxy, simulator: Process, org: str, scope: str
) -> None:
    """Claude Code's shape: AnthropicBedrock, `us.`/`global.` profile ids in the path with a
    raw `:`, streamed Messages with tools, a system prompt and beta flags, and CountTokens."""
    key = profile_proxy.issue_key(org, "claude-code")
    client = _anthropic(key, profile_proxy.url)
    requested = f"{scope}.{SONNET}"
    served = requested if org == "fresh" else f"{scope}.{HAIKU}"
    with client.messages.stream(
        model=requested, max_tokens=64, system=[{"type": "text", "text": "You are Claude Code."}],
        messages=[{"role": "user", "content": "Read README.md"}], tools=TOOLS,  # type: ignore[arg-type]
        extra_headers={"anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"},
        extra_body={"anthropic_beta": ["claude-code-20250219"]},
    ) as stream:
        final = stream.get_final_message()
        response = stream.response
    assert final.usage.output_tokens > 0
    assert response.headers["x-costkeeper-model-id"] == served
    assert response.headers["x-costkeeper-fallback"] == str(org == "spent").lower()
    request_id = response.headers["x-amzn-requestid"]
    record = _reached(simulator, request_id)
    assert record["path"] == f"/model/{served}/invoke-with-response-stream"  # raw `:` kept, or in scope
    event = wait_for_event(profile_proxy, request_id)
    assert (event.model, event.input_tokens, event.output_tokens, event.estimated) == (
        served, final.usage.input_tokens, final.usage.output_tokens, False)
    client.close()
    # CountTokens, as Bedrock takes it: the base model id, the Messages body inside.
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
                       "messages": [{"role": "user", "content": "Read README.md"}]}).encode()
    counted = _client(key, profile_proxy.url).count_tokens(modelId=SONNET, input={"invokeModel": {"body": body}})
    assert counted["inputTokens"] > 0


def test_the_shipped_config_serves_claude_code_ids(tmp_path: Path) -> None:
    """config.yaml names Claude 4.5 by profiles Bedrock has, and prices every Claude 4.5
    model's global profile 10 % below its geographic ones (Opus 4.5 too)."""
    from proxy.config_load import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "config.yaml", environ={})
    table = PriceTable(config.pricing)
    usage = Usage(1_000_000, 1_000_000, cache_read_tokens=1_000_000, cache_write_tokens=1_000_000)
    for model in (SONNET, HAIKU, OPUS):
        world = table.price_of(f"global.{model}")
        assert world is not None and world == table.price_of(model), model
        for scope in sorted(config.policies.model_scopes.get(model, ())):
            if scope in ("global", "in_region"):
                continue
            geo = table.price_of(f"{scope}.{model}")
            assert geo is not None and geo != world, f"{scope}.{model} is priced as global"
            geo_cost, world_cost = table.cost_pico_usd(f"{scope}.{model}", usage), table.cost_pico_usd(model, usage)
            assert geo_cost is not None and world_cost is not None and geo_cost * 10 == world_cost * 11
    assert all(member.startswith("us.") for member in config.policies.default_chain)
