"""Cost attribution by tag (issue 22 item 3), end to end with a real boto3 client, on both stores.

Converse and ConverseStream tag with `requestMetadata`; InvokeModel and its stream with
`x-costkeeper-tag-<key>` headers — one added before signing (so the client's SigV4
covers it and the proxy must verify it as sent), one after. `costkeeper usage --by
…,tag:<key>` and `/v1/usage` then count each value exactly what the simulator billed
its requests, and the simulator ("Bedrock") received no tag header while
`requestMetadata` reached it unchanged.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_PRICING
from tests.dynamodb_local import DynamoDBLocal, start_dynamodb_local
from tests.e2e.clients import NOVA, bedrock_client, invoke_body
from tests.processes import Process, Proxy, costkeeper, start_proxy, wait_for

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "tags-admin-token"
MESSAGES = [{"role": "user", "content": [{"text": "Tell me about tags."}]}]


@pytest.fixture(params=["sqlite", "dynamodb"])
def tagged_proxy(request: pytest.FixtureRequest, tmp_path: Path, simulator: Process) -> Iterator[Proxy]:
    dynamodb: DynamoDBLocal | None = None
    store: dict[str, Any] = {"backend": "sqlite", "path": str(tmp_path / "tags.db")}
    if request.param == "dynamodb":
        dynamodb = start_dynamodb_local(tmp_path)
        store = {"backend": "dynamodb", "table": f"tags-{uuid.uuid4().hex[:8]}", "endpoint_url": dynamodb.endpoint_url,
                 "journal_dir": str(tmp_path / "journal")}
    proxy = start_proxy(tmp_path, simulator.url, {
        "pricing": TEST_PRICING, "store": store,
        "attribution": {"request_metadata_keys": ["project", "job"], "max_tag_values": 100},
    }, env={"COSTKEEPER_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        yield proxy
    finally:
        proxy.stop()
        if dynamodb is not None:
            dynamodb.stop()


def _with_header(client: Any, operation: str, name: str, value: str, stage: str) -> None:
    """Add a header to every `operation` call: at `before-sign` (signed) or `before-send` (not)."""
    def add(request: Any, **_: Any) -> None:
        request.headers[name] = value
    client.meta.events.register(f"{stage}.bedrock-runtime.{operation}", add)


def _usage(proxy: Proxy, by: str) -> dict[str, Any]:
    out = costkeeper("usage", "--config", str(proxy.config_path), "--by", by, "--format", "json",
                     env=proxy.aws_env).stdout
    return dict(json.loads(out))


def test_request_metadata_and_headers_reach_usage_by_tag(tagged_proxy: Proxy, simulator: Process) -> None:
    proxy = tagged_proxy
    client = bedrock_client(proxy.issue_key("acme", "batch"), endpoint_url=proxy.url)
    _with_header(client, "InvokeModel", "X-CostKeeper-Tag-Project", "apollo", "before-sign")
    _with_header(client, "InvokeModelWithResponseStream", "x-costkeeper-tag-job", "nightly-7", "before-send")
    _with_header(client, "InvokeModelWithResponseStream", "x-costkeeper-tag-unlisted", "x", "before-sign")
    ids: dict[str, dict[str, str]] = {}  # simulator request id → the tags the request carried

    def sent(response: dict[str, Any], **tags: str) -> None:
        ids[response["ResponseMetadata"]["RequestId"]] = tags

    metadata = {"project": "apollo", "job": "nightly-7", "owner": "not-listed"}
    for _ in range(2):
        sent(client.converse(modelId=NOVA, messages=MESSAGES, inferenceConfig={"maxTokens": 30},
                             requestMetadata=metadata), project="apollo", job="nightly-7")
    stream = client.converse_stream(modelId=NOVA, messages=MESSAGES, inferenceConfig={"maxTokens": 30},
                                    requestMetadata={"project": "gemini"})
    assert any("metadata" in event for event in list(stream["stream"]))
    sent(stream, project="gemini")
    sent(client.converse(modelId=NOVA, messages=MESSAGES, inferenceConfig={"maxTokens": 30}))  # untagged
    answer = client.invoke_model(modelId=NOVA, body=invoke_body("nova", "tag me"))
    answer["body"].read()
    sent(answer, project="apollo")
    streamed = client.invoke_model_with_response_stream(modelId=NOVA, body=invoke_body("nova", "tag my stream"))
    assert list(streamed["body"])
    sent(streamed, job="nightly-7")

    # What "Bedrock" received: no tag header, requestMetadata left in the body.
    received = {record["request_id"]: record for record in httpx.get(f"{simulator.url}/_sim/requests").json()}
    assert set(ids) <= set(received)
    for request_id in ids:
        record = received[request_id]
        assert not [name for name in record["headers"] if name.startswith("x-costkeeper")], record["headers"]
        if record["operation"] in ("Converse", "ConverseStream") and ids[request_id]:
            assert json.loads(record["body"])["requestMetadata"]["project"] == ids[request_id]["project"]

    def expected(key: str) -> dict[str | None, tuple[int, int]]:
        totals: dict[str | None, tuple[int, int]] = {}
        for request_id, tags in ids.items():
            usage = received[request_id]["usage"]
            requests, tokens = totals.get(tags.get(key), (0, 0))
            totals[tags.get(key)] = (requests + 1, tokens + sum(usage.values()))
        return totals

    def counted(key: str) -> dict[str | None, tuple[int, int]]:
        rows = _usage(proxy, f"org,app,tag:{key}")["rows"]
        assert {(row["org"], row["app"]) for row in rows} <= {("acme", "batch")}
        return {row[f"tag:{key}"]: (row["requests"], sum(row[name] for name in (
            "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"))) for row in rows}

    wait_for(lambda: sum(n for n, _ in counted("project").values()) == len(ids), 20, "the usage to be stored")
    assert counted("project") == expected("project")
    assert counted("job") == expected("job")
    assert expected("project")["apollo"][0] == 3 and expected("job")["nightly-7"][0] == 3

    api = httpx.get(f"{proxy.admin_url}/v1/usage", params={"by": "tag:project"},
                    headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10).json()
    assert {row["tag:project"]: row["requests"] for row in api["rows"]} == {
        value: requests for value, (requests, _) in expected("project").items()}
    assert api["total"]["requests"] == len(ids)
    client.close()
    assert "Traceback" not in proxy.output()
