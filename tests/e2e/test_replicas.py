"""Four proxy replicas share one DynamoDB (Amazon's DynamoDB Local) and one daily quota.

Concurrent boto3 traffic through all four asks for `premium` until every client
has been moved to the fallback; the spend that landed on `premium` is then
measured against its quota. NORMAL-mode reads are cached and eventually
consistent, TIGHT mode reserves the worst case atomically in DynamoDB: the
overrun must stay under 5 % (aim: 1 %). The measured figure is printed and
written to `replica-overrun.txt` in the test's directory, for the README.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

from metering.money import format_usd, usd_to_pico
from metering.pricing import Price
from tests.conftest import TEST_PRICING
from tests.dynamodb_local import start_dynamodb_local
from tests.e2e.clients import bedrock_client
from tests.processes import Process, Proxy, start_proxy

PRO, LITE = "amazon.nova-pro-v1:0", "amazon.nova-lite-v1:0"
PRICE = {"input": 0.8, "output": 3.2}
QUOTA_USD = 0.12
REPLICAS, CLIENTS_PER_REPLICA = 4, 4


def _cost(usage: dict[str, int]) -> int:
    """pico-USD, as the proxy meters it."""
    price = Price.from_mapping(PRO, PRICE)
    return usage["inputTokens"] * price.input + usage["outputTokens"] * price.output


def test_four_replicas_overrun_the_quota_by_less_than_five_percent(tmp_path: Path, simulator: Process) -> None:
    dynamodb = start_dynamodb_local(tmp_path)
    table = f"replicas-{uuid.uuid4().hex[:8]}"
    proxies: list[Proxy] = []
    try:
        for index in range(REPLICAS):
            proxies.append(start_proxy(tmp_path, simulator.url, {
                "pricing": {**TEST_PRICING, PRO: PRICE},
                "models": {"premium": PRO, "standard": LITE},
                "fallback": ["premium", "standard"],
                "quotas": {"normal_ttl": 0.5, "tight_ttl": 0.1, "tight_threshold": 0.8},
                "metering": {"flush_interval": 0.2},
                "orgs": {"acme": {"quota_scope": "ORG", "daily_quota_usd": {"premium": QUOTA_USD}}},
                "store": {"backend": "dynamodb", "table": table, "endpoint_url": dynamodb.endpoint_url,
                          "journal_dir": str(tmp_path / f"journal-{index}")},
            }))  # the simulator's credentials sign DynamoDB calls too (DynamoDB Local accepts any)
        spend, served, errors = _drive(proxies)
        assert not errors, errors[:3]
        quota = usd_to_pico(QUOTA_USD, "QUOTA_USD")
        overrun = (spend - quota) / quota
        report = (f"{REPLICAS} replicas x {CLIENTS_PER_REPLICA} clients, quota ${QUOTA_USD}: "
                  f"{served[PRO]} requests on premium spent ${format_usd(spend)} "
                  f"(overrun {overrun:+.2%}), {served[LITE]} served by the fallback")
        print(report)
        (tmp_path / "replica-overrun.txt").write_text(report + "\n")
        assert served[LITE] > 0, "the quota was never reached: raise the traffic or lower QUOTA_USD"
        assert spend >= 0.9 * quota, f"stopped far below the quota: {report}"
        assert overrun < 0.05, report
    finally:
        for proxy in proxies:
            proxy.stop()
        dynamodb.stop()


def _drive(proxies: list[Proxy]) -> tuple[int, dict[str, int], list[str]]:
    """Every client asks for premium until it has seen the fallback 5 times in a row."""
    lock = threading.Lock()
    spend = 0
    served = {PRO: 0, LITE: 0}
    errors: list[str] = []
    deadline = time.monotonic() + 120

    def client_loop(proxy: Proxy, key: dict[str, str], number: int) -> None:
        nonlocal spend
        client: Any = bedrock_client({**key}, endpoint_url=proxy.url)
        fallbacks = 0
        turn = 0
        while fallbacks < 5 and time.monotonic() < deadline:
            turn += 1
            try:
                response = client.converse(
                    modelId="premium", inferenceConfig={"maxTokens": 40},
                    messages=[{"role": "user", "content": [{"text": f"Write about the sea, part {number}.{turn}"}]}],
                )
            except Exception as exc:  # collected and asserted on: no error is expected
                with lock:
                    errors.append(repr(exc))
                return
            model = response["ResponseMetadata"]["HTTPHeaders"]["x-costkeeper-model-id"]
            with lock:
                served[model] += 1
                if model == PRO:
                    spend += _cost(response["usage"])
            fallbacks = fallbacks + 1 if model != PRO else 0
        client.close()

    threads = []
    for index, proxy in enumerate(proxies):
        key = proxy.issue_key("acme", f"app{index}")
        for number in range(CLIENTS_PER_REPLICA):
            threads.append(threading.Thread(target=client_loop, args=(proxy, key, index * 10 + number)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return spend, served, errors

