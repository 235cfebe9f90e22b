"""Budget leases end to end on DynamoDB Local, default configuration (issue #18 items 2–4).

* Sequential requests on one replica switch to the fallback before the request that
  would pass the quota.
* Requests that fail upstream, or whose stream is cut, give back what they held: the
  quota's `leased` returns to zero and `spent` is what was metered.
* The slice a killed replica held comes back once its lease expires (`lease_ttl`, 30 s).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from metering.pricing import Price
from tests.dynamodb_local import DynamoDBLocal, start_dynamodb_local
from tests.e2e.clients import bedrock_client
from tests.e2e.test_replicas import LITE, PRICE, PRO, replica_config, worst_case
from tests.processes import Process, Proxy, start_proxy, wait_for

ADMIN_TOKEN = "leases-admin-token-0123456789"


@pytest.fixture(scope="module")
def dynamodb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynamoDBLocal]:
    server = start_dynamodb_local(tmp_path_factory.mktemp("dynamodb"))
    yield server
    server.stop()


def _proxy(tmp: Path, simulator: Process, dynamodb: DynamoDBLocal, table: str, quota_usd: float,
           journal: str = "journal") -> Proxy:
    config = replica_config(dynamodb.endpoint_url, table, tmp / journal)
    config["orgs"] = {"acme": {"quota_scope": "ORG", "daily_quota_usd": {"premium": quota_usd}}}
    return start_proxy(tmp, simulator.url, config, env={"COSTKEEPER_ADMIN_TOKEN": ADMIN_TOKEN})


def _premium(proxy: Proxy) -> dict[str, Any]:
    """premium's line of `GET /v1/quotas` for scope acme."""
    answer = httpx.get(f"{proxy.admin_url}/v1/quotas", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                       timeout=10).json()
    [scope] = [scope for scope in answer["scopes"] if scope["scope"] == "acme"]
    [line] = [line for line in scope["models"] if line["model"] == PRO]
    return line  # type: ignore[no-any-return]


def _cost(usage: dict[str, int]) -> int:
    """pico-USD, as the proxy meters it."""
    price = Price.from_mapping(PRO, PRICE)
    return usage["inputTokens"] * price.input + usage["outputTokens"] * price.output


def _ask(client: Any, text: str, max_tokens: int = 16) -> tuple[str, int]:
    response = client.converse(modelId="premium", inferenceConfig={"maxTokens": max_tokens},
                               messages=[{"role": "user", "content": [{"text": text}]}])
    return response["ResponseMetadata"]["HTTPHeaders"]["x-costkeeper-model-id"], _cost(response["usage"])


def test_sequential_requests_switch_before_the_one_that_would_pass_the_quota(
        tmp_path: Path, simulator: Process, dynamodb: DynamoDBLocal) -> None:
    quota = 2_000 * 10**6  # pico-USD ($0.002)
    proxy = _proxy(tmp_path, simulator, dynamodb, f"seq-{uuid.uuid4().hex[:8]}", quota / 10**12)
    try:
        client = bedrock_client(proxy.issue_key("acme", "seq"), endpoint_url=proxy.url)
        served: list[tuple[str, int]] = [_ask(client, f"Tell me about harbours, part {n}.") for n in range(40)]
        client.close()
    finally:
        proxy.stop()
    models = [model for model, _ in served]
    switch = models.index(LITE)
    spent = sum(cost for model, cost in served if model == PRO)
    assert set(models[switch:]) == {LITE}  # and it stays switched
    assert spent <= quota
    # Switched because the next request's worst case no longer fit, not any earlier.
    worst = worst_case([{"role": "user", "content": [{"text": f"Tell me about harbours, part {switch}."}]}], 16)
    assert quota - spent < worst, (spent, served)


def test_failed_and_cut_requests_give_back_what_they_held(
        tmp_path: Path, simulator: Process, dynamodb: DynamoDBLocal) -> None:
    """A quota of a few requests' worst cases: every slice is one request's (TIGHT), and a
    slice left idle goes back within about a second."""
    proxy = _proxy(tmp_path, simulator, dynamodb, f"abort-{uuid.uuid4().hex[:8]}", 0.0006)
    try:
        client = bedrock_client(proxy.issue_key("acme", "abort"), endpoint_url=proxy.url)
        with pytest.raises(client.exceptions.ValidationException):
            _ask(client, "[[sim:validation]] refused upstream")
        with pytest.raises(client.exceptions.ThrottlingException):
            _ask(client, "[[sim:throttle]] throttled upstream")
        wait_for(lambda: _premium(proxy)["leased_pico_usd"] == 0, 10, "the failed requests' slices to come back")
        assert _premium(proxy)["spend_pico_usd"] == 0

        hold = uuid.uuid4().hex
        impatient = bedrock_client(proxy.issue_key("acme", "impatient"), endpoint_url=proxy.url, read_timeout=1)
        with pytest.raises(Exception):  # noqa: B017, PT011 - botocore's read timeout: the client hangs up
            _ask(impatient, f"[[sim:hold={hold}]] held before its first byte")
        impatient.close()
        assert _premium(proxy)["leased_pico_usd"] > 0  # still in flight upstream: its worst case is held
        httpx.post(f"{simulator.url}/_sim/release/{hold}", timeout=5)
        wait_for(lambda: _premium(proxy)["leased_pico_usd"] == 0, 10, "the hung-up request's slice to come back")
        metered = _premium(proxy)["spend_pico_usd"]  # what Bedrock billed for it, if anything

        stream = client.converse_stream(modelId="premium", inferenceConfig={"maxTokens": 100},
                                        messages=[{"role": "user", "content": [{"text": "[[sim:cut]] a long tale"}]}])
        with pytest.raises(Exception):  # noqa: B017, PT011 - the SDK raises what the cut frame says
            for _ in stream["stream"]:
                pass
        stream["stream"].close()
        client.close()
        def settled() -> bool:
            line = _premium(proxy)
            return line["leased_pico_usd"] == 0 and line["spend_pico_usd"] > metered

        wait_for(settled, 10, "the cut stream to settle its estimate")
        usage = httpx.get(f"{proxy.admin_url}/v1/usage?by=model", timeout=10,
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
        [metered_row] = [row for row in usage["rows"] if row["model"] == PRO]
        assert metered_row["estimated_requests"] >= 1
        assert _premium(proxy)["spend_pico_usd"] == metered_row["cost_pico_usd"]
        # /metrics shows the same budget, as this replica last read it, and the lease writes.
        families = {family.name: family for family in text_string_to_metric_families(
            httpx.get(f"{proxy.admin_url}/metrics", timeout=10).text)}
        states = {sample.labels["state"] for sample in families["costkeeper_quota_budget_usd"].samples
                  if sample.labels["scope"] == "acme" and sample.labels["model"] == PRO}
        assert states == {"spent", "leased", "remaining"}
        kinds = {sample.labels["kind"] for sample in families["costkeeper_quota_lease_writes"].samples}
        assert {"claim", "give_back"} <= kinds
    finally:
        proxy.stop()


def test_a_killed_replicas_slice_comes_back_once_its_lease_expires(
        tmp_path: Path, simulator: Process, dynamodb: DynamoDBLocal) -> None:
    table = f"killed-{uuid.uuid4().hex[:8]}"
    quota = 8_000 * 10**6  # pico-USD ($0.008)
    doomed = _proxy(tmp_path, simulator, dynamodb, table, quota / 10**12, journal="journal-doomed")
    survivor = _proxy(tmp_path, simulator, dynamodb, table, quota / 10**12, journal="journal-survivor")
    try:
        key = doomed.issue_key("acme", "app")
        first = bedrock_client(key, endpoint_url=doomed.url)
        model, _ = _ask(first, "one request claims a slice")
        first.close()
        assert model == PRO
        held = _premium(doomed)["leased_pico_usd"]
        assert held >= quota // 8  # a slice for many requests, far from the quota
        os.kill(doomed.popen.pid, signal.SIGKILL)
        killed = time.monotonic()
        client = bedrock_client(key, endpoint_url=survivor.url)
        while _ask(client, "drain what is left")[0] == PRO:
            pass
        assert quota - _premium(survivor)["spend_pico_usd"] >= held - 200 * 10**6  # the dead slice is still held
        while _ask(client, "after the lease expires")[0] != PRO:
            assert time.monotonic() - killed < 30 + 15, "the dead replica's slice never came back"
            time.sleep(1)
        client.close()
        line = _premium(survivor)
        assert line["spend_pico_usd"] + line["leased_pico_usd"] <= quota
    finally:
        doomed.stop()
        survivor.stop()
