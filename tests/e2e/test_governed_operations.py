"""Async invocations, guardrails and the bidirectional stream through a real proxy
process and the simulator (issue #17 item 4): governed, owned and metered.

The first tests reproduce the finding with a configuration today's proxy accepts
(a key limited to one model, no `allowed_operations`): each of those calls used to
reach the upstream with the proxy's identity and leave no usage row. The rest run
a proxy whose orgs allow these operations and check what governs them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_PRICING
from tests.e2e.bidi_client import opened
from tests.e2e.clients import bedrock_client, wait_for_event
from tests.processes import Process, Proxy, start_proxy

REEL = "amazon.nova-reel-v1:1"
SONIC = "amazon.nova-sonic-v1:0"
MICRO = "amazon.nova-micro-v1:0"
SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
ASYNC_OPERATIONS = ["StartAsyncInvoke", "GetAsyncInvoke", "ListAsyncInvokes"]
GUARDRAIL_PRICES = {"content": 0.15, "topic": 0.15, "sensitive_information": 0.10, "word": 0.0}
OUTPUT = {"s3OutputDataConfig": {"s3Uri": "s3://videos/out"}}


def video_input(seconds: int = 6) -> dict[str, Any]:
    return {"taskType": "TEXT_VIDEO", "textToVideoParams": {"text": "waves at dusk"},
            "videoGenerationConfig": {"durationSeconds": seconds, "fps": 24, "dimension": "1280x720"}}


def _request_id(response: dict[str, Any]) -> str:
    return str(response["ResponseMetadata"]["RequestId"])


def _sim_requests(simulator: Process, since: float = 0.0) -> list[dict[str, Any]]:
    """What reached the simulator at or after `since` (its log keeps the last 200 requests)."""
    answer = httpx.get(f"{simulator.url}/_sim/requests", timeout=5).json()
    records = answer["requests"] if isinstance(answer, dict) else answer
    return [record for record in records if record["time"] >= since]


@pytest.fixture(autouse=True)
def _endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)


# -- the finding, on a configuration today's proxy accepts --------------------


@pytest.fixture(scope="module")
def plain_proxy(tmp_path_factory: pytest.TempPathFactory, simulator: Process) -> Iterator[Proxy]:
    """The reviewer's setup: a key limited to one model, nothing else configured."""
    config = {
        "pricing": TEST_PRICING,
        "models": {"economy": MICRO},
        "orgs": {"acme": {"apps": {"limited": {"allowed_models": ["economy"]}}}},
    }
    proxy = start_proxy(tmp_path_factory.mktemp("plain"), simulator.url, config)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def limited(plain_proxy: Proxy) -> Any:
    client = bedrock_client(plain_proxy.issue_key("acme", "limited"), endpoint_url=plain_proxy.url)
    yield client
    client.close()


def _refused(raised: pytest.ExceptionInfo[Any], operation: str) -> None:
    error = raised.value.response
    assert error["Error"]["Code"] == "AccessDeniedException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert operation in error["Error"]["Message"]


def test_start_async_invoke_is_not_an_operation_apps_get_by_default(limited: Any, simulator: Process) -> None:
    before = time.time()
    with pytest.raises(limited.exceptions.AccessDeniedException) as raised:
        limited.start_async_invoke(modelId=REEL, modelInput=video_input(), outputDataConfig=OUTPUT)
    _refused(raised, "StartAsyncInvoke")
    assert all(r["operation"] != "StartAsyncInvoke" for r in _sim_requests(simulator, before))


def test_listing_the_accounts_jobs_is_refused_by_default(limited: Any) -> None:
    with pytest.raises(limited.exceptions.AccessDeniedException) as raised:
        limited.list_async_invokes()
    _refused(raised, "ListAsyncInvokes")


def test_getting_a_job_is_refused_by_default(limited: Any) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:async-invoke/abcdefghijkl"
    with pytest.raises(limited.exceptions.AccessDeniedException) as raised:
        limited.get_async_invoke(invocationArn=arn)
    _refused(raised, "GetAsyncInvoke")


def test_apply_guardrail_is_refused_by_default(limited: Any) -> None:
    with pytest.raises(limited.exceptions.AccessDeniedException) as raised:
        limited.apply_guardrail(guardrailIdentifier="gr1", guardrailVersion="1", source="INPUT",
                                content=[{"text": {"text": "hi"}}])
    _refused(raised, "ApplyGuardrail")


def test_bidirectional_stream_is_refused_by_default(plain_proxy: Proxy, simulator: Process) -> None:
    key = plain_proxy.issue_key("acme", "limited")
    before = time.time()
    refused = asyncio.run(opened(plain_proxy.url, key, SONIC))
    assert refused.status == 403, refused.body
    assert refused.headers["x-amzn-errortype"].startswith("AccessDeniedException")
    assert "InvokeModelWithBidirectionalStream" in json.loads(refused.body)["message"]
    assert not _sim_requests(simulator, before)  # never signed with the proxy's credentials


def test_count_tokens_is_governed_by_allowed_models(limited: Any, simulator: Process) -> None:
    """CountTokens costs nothing, but it names a model: `allowed_models` governs it as it
    governs inference, so a key limited to one model cannot reach the others."""
    prompt = {"converse": {"messages": [{"role": "user", "content": [{"text": "Hello, world!"}]}]}}
    before = time.time()
    with pytest.raises(limited.exceptions.AccessDeniedException) as raised:
        limited.count_tokens(modelId=SONNET, input=prompt)
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Message"] == "You don't have access to the model with the specified model ID."
    assert all(r["operation"] != "CountTokens" for r in _sim_requests(simulator, before))
    # The model it may use, by its id or its label, is counted.
    assert limited.count_tokens(modelId=MICRO, input=prompt)["inputTokens"] > 0
    assert limited.count_tokens(modelId="economy", input=prompt)["inputTokens"] > 0


# -- allowed operations, governed ----------------------------------------------


@pytest.fixture(scope="module")
def gov_proxy(tmp_path_factory: pytest.TempPathFactory, simulator: Process) -> Iterator[Proxy]:
    config = {
        "pricing": {**TEST_PRICING, REEL: {"per_second": 0.08},
                    "guardrail": {"per_1k_text_units": GUARDRAIL_PRICES}},
        "models": {"video": REEL, "voice": SONIC, "economy": MICRO},
        "orgs": {
            "acme": {
                "allowed_operations": [*ASYNC_OPERATIONS, "ApplyGuardrail", "InvokeModelWithBidirectionalStream",
                                       "Converse"],
                "allowed_s3_outputs": ["s3://videos/"],
                "apps": {
                    "studio": {"allowed_models": ["video", "voice"]},
                    "chat": {"allowed_operations": ["Converse"]},
                },
            },
            "rival": {"allowed_operations": ASYNC_OPERATIONS},
            "budget": {"allowed_operations": ASYNC_OPERATIONS, "daily_quota_usd": {"video": 1.0}},
        },
    }
    proxy = start_proxy(tmp_path_factory.mktemp("governed"), simulator.url, config)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def clients(gov_proxy: Proxy) -> Iterator[dict[str, Any]]:
    made = {name: bedrock_client(gov_proxy.issue_key(org, app), endpoint_url=gov_proxy.url)
            for name, (org, app) in {"studio": ("acme", "studio"), "chat": ("acme", "chat"),
                                     "other_app": ("acme", "other"), "rival": ("rival", "r1"),
                                     "budget": ("budget", "b1")}.items()}
    yield made
    for client in made.values():
        client.close()


def test_allowed_models_apply_to_the_model_in_the_body(clients: dict[str, Any], simulator: Process) -> None:
    studio = clients["studio"]
    before = time.time()
    with pytest.raises(studio.exceptions.AccessDeniedException, match="don't have access"):
        studio.start_async_invoke(modelId="amazon.nova-canvas-v1:0", modelInput={"taskType": "TEXT_IMAGE"},
                                  outputDataConfig=OUTPUT)
    assert all(r["operation"] != "StartAsyncInvoke" for r in _sim_requests(simulator, before))


def test_job_output_goes_only_where_the_org_allows(clients: dict[str, Any], simulator: Process) -> None:
    studio = clients["studio"]
    before = time.time()
    elsewhere = {"s3OutputDataConfig": {"s3Uri": "s3://another-teams-bucket/reels"}}
    with pytest.raises(studio.exceptions.AccessDeniedException, match="allowed_s3_outputs"):
        studio.start_async_invoke(modelId=REEL, modelInput=video_input(), outputDataConfig=elsewhere)
    assert all(r["operation"] != "StartAsyncInvoke" for r in _sim_requests(simulator, before))


def test_an_app_setting_overrides_its_orgs(clients: dict[str, Any]) -> None:
    chat = clients["chat"]
    with pytest.raises(chat.exceptions.AccessDeniedException) as raised:
        chat.start_async_invoke(modelId=REEL, modelInput=video_input(), outputDataConfig=OUTPUT)
    _refused(raised, "StartAsyncInvoke")


def test_a_label_in_the_body_resolves_and_the_job_is_metered_per_second(
        clients: dict[str, Any], gov_proxy: Proxy, simulator: Process) -> None:
    studio = clients["studio"]
    started = studio.start_async_invoke(modelId="video", modelInput=video_input(6), outputDataConfig=OUTPUT)
    arn = started["invocationArn"]
    received = next(r for r in reversed(_sim_requests(simulator)) if r["operation"] == "StartAsyncInvoke")
    assert json.loads(received["body"])["modelId"] == REEL
    event = wait_for_event(gov_proxy, _request_id(started))
    assert (event.operation, event.model, event.requested_model) == ("StartAsyncInvoke", REEL, "video")
    assert (event.org, event.app, event.status) == ("acme", "studio", 200)
    assert event.input_tokens == event.output_tokens == 0
    assert event.priced and event.cost_pico_usd == 480_000_000_000  # 6 s × $0.08
    headers = started["ResponseMetadata"]["HTTPHeaders"]  # the job's model, as a relayed answer says it
    assert (headers["x-costkeeper-model-id"], headers["x-costkeeper-fallback"], headers["x-costkeeper-mode"]) == (REEL, "false", "NORMAL")
    assert studio.get_async_invoke(invocationArn=arn)["invocationArn"] == arn


def test_a_repeated_client_request_token_is_one_job_charged_once(clients: dict[str, Any], gov_proxy: Proxy) -> None:
    studio = clients["studio"]
    first = studio.start_async_invoke(modelId=REEL, modelInput=video_input(), outputDataConfig=OUTPUT,
                                      clientRequestToken="repeat-token-1")
    again = studio.start_async_invoke(modelId=REEL, modelInput=video_input(), outputDataConfig=OUTPUT,
                                      clientRequestToken="repeat-token-1")
    assert first["invocationArn"] == again["invocationArn"]
    assert wait_for_event(gov_proxy, _request_id(first)).cost_pico_usd == 480_000_000_000
    repeat = wait_for_event(gov_proxy, _request_id(again))
    assert repeat.operation == "StartAsyncInvoke" and repeat.cost_pico_usd == 0


def test_another_callers_token_does_not_reveal_its_job(clients: dict[str, Any]) -> None:
    clients["studio"].start_async_invoke(modelId=REEL, modelInput=video_input(), outputDataConfig=OUTPUT,
                                         clientRequestToken="shared-token-1")
    rival = clients["rival"]
    with pytest.raises(rival.exceptions.ConflictException) as raised:
        rival.start_async_invoke(modelId=REEL, modelInput=video_input(), outputDataConfig=OUTPUT,
                                 clientRequestToken="shared-token-1")
    assert "async-invoke/" not in raised.value.response["Error"]["Message"]


def test_get_answers_only_the_callers_own_jobs(clients: dict[str, Any], gov_proxy: Proxy) -> None:
    studio, rival = clients["studio"], clients["rival"]
    mine = studio.start_async_invoke(modelId=REEL, modelInput=video_input(), outputDataConfig=OUTPUT)["invocationArn"]
    fetched = studio.get_async_invoke(invocationArn=mine)
    assert fetched["invocationArn"] == mine
    event = wait_for_event(gov_proxy, _request_id(fetched))
    assert (event.operation, event.model, event.cost_pico_usd) == ("GetAsyncInvoke", REEL, 0)
    for outsider in (rival, clients["other_app"]):
        with pytest.raises(outsider.exceptions.ResourceNotFoundException) as raised:
            outsider.get_async_invoke(invocationArn=mine)
        assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    unknown = mine[:-12] + "zzzzzzzzzzzz"
    with pytest.raises(studio.exceptions.ResourceNotFoundException):
        studio.get_async_invoke(invocationArn=unknown)


def test_list_shows_only_the_callers_own_jobs_page_by_page(clients: dict[str, Any], gov_proxy: Proxy) -> None:
    studio, rival = clients["studio"], clients["rival"]
    rivals = {rival.start_async_invoke(modelId=REEL, modelInput=video_input(),
                                       outputDataConfig=OUTPUT)["invocationArn"] for _ in range(3)}
    mine = {studio.start_async_invoke(modelId=REEL, modelInput=video_input(),
                                      outputDataConfig=OUTPUT)["invocationArn"] for _ in range(2)}
    listed = rival.list_async_invokes(maxResults=1000)
    assert {job["invocationArn"] for job in listed["asyncInvokeSummaries"]} == rivals
    event = wait_for_event(gov_proxy, _request_id(listed))
    assert event.operation == "ListAsyncInvokes" and event.cost_pico_usd == 0
    # One job per upstream page: pages holding others' jobs come back empty, with the
    # token that leads on; botocore's paginator follows it to the caller's last job.
    pages = list(studio.get_paginator("list_async_invokes").paginate(PaginationConfig={"PageSize": 1}))
    seen = [job["invocationArn"] for page in pages for job in page["asyncInvokeSummaries"]]
    assert mine <= set(seen) and not set(seen) & rivals
    assert any(not page["asyncInvokeSummaries"] and page.get("nextToken") for page in pages)


def test_async_jobs_count_against_the_quota(clients: dict[str, Any], gov_proxy: Proxy) -> None:
    budget = clients["budget"]
    served = 0
    with pytest.raises(budget.exceptions.ServiceQuotaExceededException) as raised:
        for _ in range(5):
            started = budget.start_async_invoke(modelId="video", modelInput=video_input(6), outputDataConfig=OUTPUT)
            wait_for_event(gov_proxy, _request_id(started))
            served += 1
    assert served == 2  # $0.48 each against $1.00: a third would overrun
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_apply_guardrail_is_metered_per_text_unit(clients: dict[str, Any], gov_proxy: Proxy) -> None:
    studio = clients["studio"]
    response = studio.apply_guardrail(guardrailIdentifier="gr1", guardrailVersion="1", source="INPUT",
                                      content=[{"text": {"text": "x" * 1500}}])
    units = response["usage"]
    assert units["contentPolicyUnits"] == 2
    event = wait_for_event(gov_proxy, _request_id(response))
    assert (event.operation, event.model, event.requested_model) == ("ApplyGuardrail", "guardrail", "gr1:1")
    # USD per 1,000 units → pico-USD per unit: × 10**12 / 1,000.
    expected = sum(units[f"{name}PolicyUnits"] * GUARDRAIL_PRICES[key] * 10**9
                   for name, key in (("content", "content"), ("topic", "topic"), ("word", "word"),
                                     ("sensitiveInformation", "sensitive_information")))
    assert event.priced and event.cost_pico_usd == round(expected) == 800_000_000


def test_bidirectional_stream_is_governed_and_recorded(gov_proxy: Proxy, simulator: Process) -> None:
    key = gov_proxy.issue_key("acme", "studio")
    refused = asyncio.run(opened(gov_proxy.url, key, MICRO))
    assert refused.status == 403 and "access" in json.loads(refused.body)["message"]
    forwarded = asyncio.run(opened(gov_proxy.url, key, "voice"))
    assert forwarded.status == 200
    received = _sim_requests(simulator)[-1]
    assert received["path"] == f"/model/{SONIC.replace(':', '%3A')}/invoke-with-bidirectional-stream"  # the label
    event = wait_for_event(gov_proxy, forwarded.request_id)
    assert (event.operation, event.model, event.status) == ("InvokeModelWithBidirectionalStream", SONIC, 200)
    assert event.input_tokens > 0 and not event.estimated  # the system prompt's usage event


