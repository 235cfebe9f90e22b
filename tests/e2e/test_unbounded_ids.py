"""Client-chosen model ids the upstream refused take no usage rows and no metric
labels (issue #17 item 5): stock boto3 through a real proxy and the simulator.

Tried before the fix: 300 ids of ~1,900 characters made `/metrics` 18 MB and
pushed a real model into `model="other"`. Here the label slots are few (3) so a
handful of ids shows the same.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_PRICING
from tests.e2e.clients import bedrock_client, wait_for_event
from tests.processes import Process, Proxy, start_proxy

MICRO = "amazon.nova-micro-v1:0"
ADMIN_TOKEN = "admin-token-for-the-ids-test"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]
BODY = json.dumps({"messages": MESSAGES, "inferenceConfig": {"maxTokens": 10}}).encode()


@pytest.fixture(scope="module")
def small_proxy(tmp_path_factory: pytest.TempPathFactory, simulator: Process) -> Iterator[Proxy]:
    proxy = start_proxy(tmp_path_factory.mktemp("ids"), simulator.url,
                        {"pricing": TEST_PRICING, "observability": {"max_model_labels": 3}},
                        env={"COSTKEEPER_ADMIN_TOKEN": ADMIN_TOKEN})
    yield proxy
    proxy.stop()


def _bogus() -> str:
    """An id of no model family: the simulator refuses it as Bedrock does (400, invalid identifier)."""
    return f"acme.model-{uuid.uuid4().hex}-" + "x" * 1900 + "-v1:0"


def test_refused_ids_take_no_usage_rows_and_no_labels(small_proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", small_proxy.url)
    client: Any = bedrock_client(small_proxy.issue_key("acme", "prober"))
    refused = []
    for _ in range(12):
        model = _bogus()
        with pytest.raises(client.exceptions.ValidationException) as raised:
            client.invoke_model(modelId=model, body=BODY)
        refused.append((model, raised.value.response["ResponseMetadata"]["RequestId"]))
    served = client.converse(modelId=MICRO, messages=MESSAGES)
    wait_for_event(small_proxy, served["ResponseMetadata"]["RequestId"])
    # Still journaled, as the errors they are.
    model, request_id = refused[-1]
    event = wait_for_event(small_proxy, request_id)
    assert event.status == 400 and event.model == model and event.total_tokens == 0
    metrics = httpx.get(f"{small_proxy.admin_url}/metrics", timeout=5).text
    assert "x" * 200 not in metrics and len(metrics) < 200_000
    assert f'model="{MICRO}"' in metrics  # the real model kept its own label
    usage = httpx.get(f"{small_proxy.admin_url}/v1/usage", params={"by": "model"}, timeout=5,
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    models = {row.get("model") for row in usage["rows"]}
    assert MICRO in models and not any(m for m, _ in refused if m in models)
