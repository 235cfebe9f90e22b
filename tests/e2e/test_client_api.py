"""The client-driven API on the admin port (issue #23), on both stores: a batch job asks
`/v1/select` for its model and reports its usage to `/v1/usage-reports`; reported and
proxied usage share one quota, and a report counts once per request id."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from metering.pricing import Price
from tests.conftest import TEST_PRICING
from tests.dynamodb_local import start_dynamodb_local
from tests.e2e.clients import bedrock_client
from tests.processes import SIM_ACCESS_KEY, SIM_SECRET_KEY, Process, Proxy, start_proxy
from tests.rate_widget import widget_figures

REPO = Path(__file__).resolve().parents[2]

ADMIN_TOKEN = "admin-token-for-client-api-tests"
MICRO, LITE = "amazon.nova-micro-v1:0", "amazon.nova-lite-v1:0"
QUOTA_USD = 0.001
#: pico-USD per input token of MICRO (TEST_PRICING: $0.035 per 1M).
MICRO_INPUT = Price.from_mapping(MICRO, TEST_PRICING[MICRO]).input


@pytest.fixture(scope="module", params=["sqlite", "dynamodb"])
def proxy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          simulator: Process) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp(f"client-api-{request.param}")
    config: dict[str, Any] = {
        "pricing": TEST_PRICING,
        "models": {"small": MICRO, "medium": LITE, "premium": LITE},
        "fallback": ["small", "medium"],
        "orgs": {"acme": {"daily_quota_usd": {"small": QUOTA_USD}}},
        "auth": {"allow_bearer_over_http": True, "key_cache_ttl": 0},
        "attribution": {"request_metadata_keys": ["project"]},
    }
    dynamodb = None
    if request.param == "dynamodb":
        dynamodb = start_dynamodb_local(tmp)
        config["store"] = {"backend": "dynamodb", "table": f"client-api-{uuid.uuid4().hex[:8]}",
                           "endpoint_url": dynamodb.endpoint_url, "journal_dir": str(tmp / "journal")}
    started = start_proxy(tmp, simulator.url, config, env={"COSTKEEPER_ADMIN_TOKEN": ADMIN_TOKEN})
    started.store_config = config.get("store")  # type: ignore[attr-defined]
    try:
        yield started
    finally:
        started.stop()
        if dynamodb is not None:
            dynamodb.stop()


def signed(proxy: Proxy, key: dict[str, str], method: str, path: str, body: bytes = b"") -> httpx.Response:
    """A SigV4-signed request (service `bedrock`), as the data port takes them."""
    url = f"{proxy.admin_url}{path}"
    request = AWSRequest(method=method, url=url, data=body,
                         headers={"Content-Type": "application/json"} if body else {})
    SigV4Auth(Credentials(key["AWS_ACCESS_KEY_ID"], key["AWS_SECRET_ACCESS_KEY"]), "bedrock",
              "us-east-1").add_auth(request)
    return httpx.request(method, url, content=body, headers=dict(request.headers), timeout=10)


def bearer(proxy: Proxy, key: dict[str, str], method: str, path: str, document: Any = None) -> httpx.Response:
    return httpx.request(method, f"{proxy.admin_url}{path}", json=document, timeout=10,
                         headers={"Authorization": f"Bearer {key['AWS_BEARER_TOKEN_BEDROCK']}"})


def admin(proxy: Proxy, path: str) -> dict[str, Any]:
    response = httpx.get(f"{proxy.admin_url}{path}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=5)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def usage_of(proxy: Proxy, org: str, app: str) -> dict[str, Any]:
    rows = admin(proxy, "/v1/usage?by=org,app,model")["rows"]
    return {row["model"]: row for row in rows if row["org"] == org and row["app"] == app}


def until(predicate: Any, what: str, within: float = 15.0) -> Any:
    """Polls a condition that depends on a flush (no timing assertion: only a bound)."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.1)


def report(request_id: str, input_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"model": MICRO, "input_tokens": input_tokens, "output_tokens": 0, "request_id": request_id, **extra}


def test_reported_and_proxied_usage_share_one_quota(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    key = proxy.issue_key("acme", "batch")
    chosen = signed(proxy, key, "GET", "/v1/select?label=small")
    assert chosen.status_code == 200, chosen.text
    answer = chosen.json()
    assert (answer["model"], answer["fallback"], answer["mode"], answer["scope"]) == (MICRO, False, "NORMAL", "acme")
    assert answer["prices"]["per_token_pico_usd"]["input"] == MICRO_INPUT
    assert answer["prices"]["per_million_tokens_usd"]["input"] == pytest.approx(0.035)
    assert bearer(proxy, key, "GET", "/v1/select?label=small").json() == answer  # a Bedrock API key too

    # Proxied traffic spends part of the quota …
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", proxy.url)
    client = bedrock_client(key)
    client.converse(modelId="small", messages=[{"role": "user", "content": [{"text": "Hello."}]}])
    proxied = until(lambda: usage_of(proxy, "acme", "batch").get(MICRO), "the proxied request flushed")
    assert proxied["requests"] == 1

    # … a reported batch spends the rest: the server prices it.
    tokens = 30_000  # 30,000 × 35,000 pico-USD = $0.00105 > the $0.001 quota
    done = bearer(proxy, key, "POST", "/v1/usage-reports", report("job-1", tokens, timestamp=time.time()))
    assert done.status_code == 200, done.text
    [result] = done.json()["records"]
    assert (result["status"], result["cost_pico_usd"], result["quota_scope"]) == ("recorded", tokens * MICRO_INPUT,
                                                                                 "acme")

    # Both counted against the one quota, and in the usage report as one model's usage.
    def spent() -> Any:
        [scope] = [s for s in admin(proxy, "/v1/quotas")["scopes"] if s["scope"] == "acme"]
        [micro] = [m for m in scope["models"] if m["model"] == MICRO]
        return micro if micro["spend_pico_usd"] == proxied["cost_pico_usd"] + tokens * MICRO_INPUT else None

    assert until(spent, "the report's spend in /v1/quotas")["exhausted"] in (True, False)
    row = until(lambda: (r := usage_of(proxy, "acme", "batch").get(MICRO)) and r["requests"] == 2 and r,
                "the report in /v1/usage")
    assert row["input_tokens"] == proxied["input_tokens"] + tokens

    # The quota is spent: the API and the proxy both move on to the fallback.
    moved = until(lambda: (a := signed(proxy, key, "GET", "/v1/select?label=small").json()).get("fallback") and a,
                  "the selection falling back")
    assert (moved["model"], moved["fallback"]) == (LITE, True)
    served = client.converse(modelId="small", messages=[{"role": "user", "content": [{"text": "Hi."}]}])
    headers = served["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-costkeeper-model-id"] == LITE and headers["x-costkeeper-fallback"] == "true"


def test_reports_are_idempotent_by_request_id(proxy: Proxy) -> None:
    key = proxy.issue_key("acme", "idem")
    batch = {"records": [report(f"idem-{i}", 100 + i, cache_read_tokens=10) for i in range(3)]}
    first = signed(proxy, key, "POST", "/v1/usage-reports", json.dumps(batch).encode())
    assert first.status_code == 200, first.text
    assert (first.json()["recorded"], first.json()["duplicates"]) == (3, 0)
    again = bearer(proxy, key, "POST", "/v1/usage-reports", batch)  # a retry after a lost answer
    assert (again.json()["recorded"], again.json()["duplicates"]) == (0, 3)
    assert [r["status"] for r in again.json()["records"]] == ["duplicate"] * 3
    # Another app may use the same ids: they are its own.
    other = proxy.issue_key("acme", "other")
    assert bearer(proxy, other, "POST", "/v1/usage-reports", report("idem-0", 5)).json()["recorded"] == 1
    row = until(lambda: (r := usage_of(proxy, "acme", "idem").get(MICRO)) and r["requests"] == 3 and r,
                "the batch in /v1/usage")
    time.sleep(0.5)  # several flush intervals: a duplicate would have shown by now
    row = usage_of(proxy, "acme", "idem")[MICRO]
    assert (row["requests"], row["input_tokens"], row["cache_read_tokens"]) == (3, 303, 30)


@pytest.mark.parametrize(("document", "message"), [
    ({"model": MICRO, "input_tokens": 1, "output_tokens": 1}, "missing field(s) ['request_id']"),
    (report("b", -1), "input_tokens: expected an integer"),
    (report("b", True), "input_tokens: expected an integer"),
    (report("b", 1, cost_usd=0.5), "a report carries no cost"),
    (report("b", 1, colour="red"), "unknown field(s) ['colour']"),
    (report("b", 1, timestamp="yesterday"), "timestamp: 'yesterday' is not ISO 8601"),
    (report("b", 1, timestamp=time.time() + 3600), "timestamp: is in the future"),
    (report("b", 1, timestamp="2020-01-01T00:00:00Z"), "older than 7 days"),
    ({**report("b", 1), "model": "no.such-model-v1:0"}, "has no price"),
    (report("has space", 1), "request_id: expected"),
    (report("b", 1, request_metadata={"project": 5}), "request_metadata: expected up to 16 string pairs"),
    (report("b", 1, request_metadata={f"k{i}": "v" for i in range(17)}), "request_metadata: expected up to 16"),
    ({"records": [report("a", 1), report("a", 2)]}, "appears twice"),
    ({"records": [report("a", 1), "x"]}, "records[1].expected a JSON object"),
    ({"records": [report(f"r{i}", 1) for i in range(1001)]}, "1 to 1000 records"),
    ({"records": []}, "1 to 1000 records"),
])
def test_bad_reports_are_refused_whole_with_a_clear_400(proxy: Proxy, document: Any, message: str) -> None:
    key = proxy.issue_key("acme", "bad")
    response = bearer(proxy, key, "POST", "/v1/usage-reports", document)
    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"].startswith("ValidationException")
    assert message in response.json()["message"]


def test_reported_usage_carries_its_attribution_tags(proxy: Proxy) -> None:
    """A batch job reports its usage with the `requestMetadata` its Bedrock calls carried
    (issue #22 item 3): the listed key is metered as a proxied request's is; others are not."""
    key = proxy.issue_key("acme", "tagged-batch")
    batch = {"records": [report("tag-a", 100, request_metadata={"project": "apollo", "job": "ignored"}),
                         report("tag-b", 20, request_metadata={"project": "apollo"}),
                         report("tag-c", 3, request_metadata={"project": "gemini"}),
                         report("tag-d", 7)]}
    assert bearer(proxy, key, "POST", "/v1/usage-reports", batch).json()["recorded"] == 4

    def by_project() -> dict[Any, int]:
        rows = admin(proxy, "/v1/usage?by=org,app,tag:project")["rows"]
        return {row["tag:project"]: row["input_tokens"] for row in rows if row["app"] == "tagged-batch"}

    assert until(lambda: by_project() == {"apollo": 120, "gemini": 3, None: 7}, f"tagged rows, got {by_project()}")


def test_a_full_batch_of_1000_is_taken(proxy: Proxy) -> None:
    key = proxy.issue_key("acme", "full")
    batch = {"records": [report(f"full-{i}", 1) for i in range(1000)]}
    response = bearer(proxy, key, "POST", "/v1/usage-reports", batch)
    assert response.status_code == 200, response.text
    assert response.json()["recorded"] == 1000
    until(lambda: (r := usage_of(proxy, "acme", "full").get(MICRO)) and r["requests"] == 1000, "the full batch")


def test_the_api_needs_an_issued_key(proxy: Proxy) -> None:
    nobody = httpx.get(f"{proxy.admin_url}/v1/select?label=small", timeout=5)
    assert nobody.status_code == 403
    assert nobody.headers["x-amzn-errortype"].startswith("MissingAuthenticationTokenException")
    admin_token = httpx.post(f"{proxy.admin_url}/v1/usage-reports", json=report("x", 1), timeout=5,
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert admin_token.status_code == 403  # the admin token is no caller's key
    key = proxy.issue_key("acme", "forged")
    forged = signed(proxy, {**key, "AWS_SECRET_ACCESS_KEY": "x" * 40}, "GET", "/v1/select?label=small")
    assert forged.status_code == 403 and "message" in forged.json()


def test_the_readme_example_runs(proxy: Proxy, simulator: Process) -> None:
    """The README's batch job, as written: Bedrock here is the simulator, reached directly."""
    readme = (REPO / "README.md").read_text()
    [code] = re.findall(r"<!-- client-api-example -->\n```python\n(.*?)```", readme, re.S)
    assert len(code.strip().splitlines()) <= 25
    key = proxy.issue_key("acme", "readme")
    env = {**os.environ, "COSTKEEPER_API": proxy.admin_url, "COSTKEEPER_KEY": key["AWS_BEARER_TOKEN_BEDROCK"],
           "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": simulator.url, "AWS_ACCESS_KEY_ID": SIM_ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": SIM_SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}
    for name in ("AWS_BEARER_TOKEN_BEDROCK", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [f"using {LITE} (NORMAL, fallback: False)", "2 recorded, 0 already counted"]
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert again.stdout.splitlines()[-1] == "2 recorded, 0 already counted"  # new Bedrock requests: new ids
    row = until(lambda: (r := usage_of(proxy, "acme", "readme").get(LITE)) and r["requests"] == 4 and r,
                "the example's reports")
    assert row["input_tokens"] > 0 and row["cost_pico_usd"] > 0


def test_the_widget_query_on_the_table_agrees_with_the_rates_api(proxy: Proxy) -> None:
    """Existing CloudWatch widgets read the rates straight from the DynamoDB table:
    `query --index-name MetricTypeIndex --key-condition-expression "gsi2pk = :pk"`. Their
    three figures, computed from the items, equal what `/v1/rates` answers."""
    store = proxy.store_config  # type: ignore[attr-defined]
    if store is None:
        pytest.skip("the widgets read DynamoDB")
    key = proxy.issue_key("acme", "widget")
    reports = {"records": [report(f"w{i}", 1000 * (i + 1), timestamp=time.time() - 60 * (3 * i)) for i in range(4)]}
    assert bearer(proxy, key, "POST", "/v1/usage-reports", reports).json()["recorded"] == 4
    table = boto3.client("dynamodb", endpoint_url=store["endpoint_url"], region_name="us-east-1",
                         aws_access_key_id=proxy.aws_env["AWS_ACCESS_KEY_ID"],
                         aws_secret_access_key=proxy.aws_env["AWS_SECRET_ACCESS_KEY"])

    def items() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = table.query(
            TableName=store["table"], IndexName="MetricTypeIndex", KeyConditionExpression="gsi2pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"MODEL_RATE#{MICRO}"}})["Items"]
        return found

    def flushed() -> bool:
        api = admin(proxy, f"/v1/rates?model={MICRO}&minutes=60")
        return sum(int(item["rpm"]["N"]) for item in items()) >= 4 and sum(p["rpm"] for p in api["series"]) >= 4

    until(flushed, "the reports in the rate items")
    for _ in range(3):  # the two reads straddle a minute boundary at most once in a row
        before = time.time()
        api, found = admin(proxy, f"/v1/rates?model={MICRO}&minutes=60"), items()
        if int(before // 60) == int(time.time() // 60):
            break
    series = {point["time"][:-1] + ":00Z": (point["tpm"], point["rpm"]) for point in api["series"]}
    assert {item["timestamp"]["S"]: (int(item["tpm"]["N"]), int(item["rpm"]["N"])) for item in found
            if item["timestamp"]["S"] in series} == series
    for field in ("tpm", "rpm"):
        widget = widget_figures(found, field, before)
        expected = api[field]
        assert widget["recent_peak_5m"] == expected["recent_peak_5m"]
        assert widget["avg_5m"] == pytest.approx(expected["avg_5m"])
        assert widget["overall_peak"] == {"value": expected["overall_peak"]["value"],
                                          "time": expected["overall_peak"]["time"][:-1] + ":00Z"}
