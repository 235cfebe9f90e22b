"""What the proxy shows about real traffic: Prometheus metrics and JSON access-log lines,
and never a secret in either."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.clients import NOVA, bedrock_client, wait_for_event
from tests.processes import SIM_SECRET_KEY, Proxy


def _tokens(proxy: Proxy, org: str, app: str, direction: str) -> float:
    text = httpx.get(f"{proxy.admin_url}/metrics", timeout=5).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "costkeeper_tokens_total" and sample.labels.get("org") == org
               and sample.labels.get("app") == app and sample.labels.get("direction") == direction)


def test_metrics_and_access_log_follow_the_traffic(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    key = proxy.issue_key("observed", "app")
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", proxy.url)
    client: Any = bedrock_client(key)
    before = _tokens(proxy, "observed", "app", "output")
    request_ids, output = [], 0
    for prompt in ("one", "two"):
        response = client.converse(modelId=NOVA, messages=[{"role": "user", "content": [{"text": prompt}]}])
        request_ids.append(response["ResponseMetadata"]["RequestId"])
        output += response["usage"]["outputTokens"]
        wait_for_event(proxy, request_ids[-1])
    assert _tokens(proxy, "observed", "app", "output") - before == output
    deadline = time.monotonic() + 5  # access-log lines are written in batches (every 50 ms)
    while True:
        lines = [json.loads(line) for line in proxy.output().splitlines() if line.startswith('{"type":"access"')]
        mine = [line for line in lines if line["request_id"] in request_ids]
        if len(mine) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(mine) == 2 and all(line["org"] == "observed" and line["model"] == NOVA for line in mine)
    assert sum(line["output_tokens"] for line in mine) == output
    everything = proxy.output() + httpx.get(f"{proxy.admin_url}/metrics", timeout=5).text
    for secret in (key["AWS_SECRET_ACCESS_KEY"], key["AWS_BEARER_TOKEN_BEDROCK"], SIM_SECRET_KEY):
        assert secret not in everything
