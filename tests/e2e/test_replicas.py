"""Replicas sharing one DynamoDB (Amazon's DynamoDB Local) and one daily quota, on the
default configuration (issue #18 items 1 and 3; metering/leases.py has the design).

A burst from zero: 16 concurrent boto3 clients spread over the replicas ask for
`premium` until each has been moved to the fallback five times in a row. The spend
that landed on `premium` (summed from the responses' usage) must stay within the quota,
and what is left of it unspent within 1 % of it plus the overestimate of the requests
then in flight. The measured figures are printed and written to `replica-overrun.txt`
in the test's directory, for the README.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from adapters.input_bound import input_token_bound
from metering.money import format_usd, usd_to_pico
from metering.pricing import Price
from tests.conftest import TEST_PRICING
from tests.dynamodb_local import start_dynamodb_local
from tests.e2e.clients import bedrock_client
from tests.processes import Process, Proxy, start_proxy

PRO, LITE = "amazon.nova-pro-v1:0", "amazon.nova-lite-v1:0"
PRICE = {"input": 0.8, "output": 3.2}
QUOTA_USD = 0.03
CLIENTS = 16
MAX_TOKENS = 40


def _cost(usage: dict[str, int]) -> int:
    """pico-USD, as the proxy meters it."""
    price = Price.from_mapping(PRO, PRICE)
    return usage["inputTokens"] * price.input + usage["outputTokens"] * price.output


def _messages(number: int, turn: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": f"Write about the sea, part {number}.{turn}"}]}]


def worst_case(messages: list[dict[str, Any]], max_tokens: int) -> int:
    """The worst case the proxy admits a Converse request on premium by (adapters/input_bound.py)."""
    body = {"messages": messages, "inferenceConfig": {"maxTokens": max_tokens}}
    price = Price.from_mapping(PRO, PRICE)
    return input_token_bound(body, "nova") * price.input + max_tokens * price.output


def replica_config(dynamodb_url: str, table: str, journal: Path, **extra: Any) -> dict[str, Any]:
    """Nothing but what the test needs: quotas, leases and metering on their defaults."""
    return {
        "pricing": {**TEST_PRICING, PRO: PRICE},
        "models": {"premium": PRO, "standard": LITE},
        "fallback": ["premium", "standard"],
        "metering": {},  # the production default (start_proxy otherwise flushes every 0.1 s)
        "orgs": {"acme": {"quota_scope": "ORG", "daily_quota_usd": {"premium": QUOTA_USD}}},
        "store": {"backend": "dynamodb", "table": table, "endpoint_url": dynamodb_url, "journal_dir": str(journal)},
        **extra,
    }


def start_replicas(tmp_path: Path, simulator: Process, count: int, dynamodb_url: str, table: str,
                   **extra: Any) -> list[Proxy]:
    """`count` proxies on one table, two starting at a time (more at once can miss the 30 s
    start-up deadline on a busy machine); the simulator's credentials sign their DynamoDB
    calls too (DynamoDB Local accepts any)."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda index: start_proxy(tmp_path, simulator.url, replica_config(
            dynamodb_url, table, tmp_path / f"journal-{index}", **extra)), range(count)))


@pytest.mark.parametrize(("replicas", "workers"), [(4, 1), (8, 1), (4, 2)], ids=["4x1", "8x1", "4x2-workers"])
def test_a_burst_from_zero_on_many_replicas_stays_within_the_quota(
        tmp_path: Path, simulator: Process, replicas: int, workers: int) -> None:
    dynamodb = start_dynamodb_local(tmp_path)
    table = f"replicas-{uuid.uuid4().hex[:8]}"
    proxies: list[Proxy] = []
    try:
        proxies += start_replicas(tmp_path, simulator, replicas, dynamodb.endpoint_url, table,
                                  server={"workers": workers})
        result = _drive(proxies)
        assert not result.errors, result.errors[:3]
        quota = usd_to_pico(QUOTA_USD, "QUOTA_USD")
        overrun = (result.spend - quota) / quota
        report = (f"{replicas} replicas x {workers} worker(s), {CLIENTS} clients, quota ${QUOTA_USD}: "
                  f"{result.served[PRO]} requests on premium spent ${format_usd(result.spend)} ({overrun:+.2%}) "
                  f"in {result.seconds:.2f} s, then the fallback served {result.served[LITE]}; "
                  f"left unspent ${format_usd(quota - result.spend)}")
        print(report)
        (tmp_path / "replica-overrun.txt").write_text(report + "\n")
        assert result.served[LITE] > 0, "the quota was never reached: raise the traffic or lower QUOTA_USD"
        assert result.spend <= quota, report
        # Under-use: at most 1 % of the quota plus what the requests in flight overestimated.
        assert quota - result.spend <= 0.01 * quota + CLIENTS * result.overestimate, report
    finally:
        for proxy in proxies:
            proxy.stop()
        dynamodb.stop()


class _Result:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spend = 0
        self.served = {PRO: 0, LITE: 0}
        self.errors: list[str] = []
        #: The largest worst case minus cost of a request served on premium.
        self.overestimate = 0
        self.first = 0.0
        self.last_premium = 0.0

    @property
    def seconds(self) -> float:
        return self.last_premium - self.first


def _drive(proxies: list[Proxy]) -> _Result:
    """Every client asks for premium until it has seen the fallback 5 times in a row."""
    result = _Result()
    deadline = time.monotonic() + 120
    start = threading.Barrier(CLIENTS)

    def client_loop(proxy: Proxy, key: dict[str, str], number: int) -> None:
        client: Any = bedrock_client({**key}, endpoint_url=proxy.url)
        fallbacks = turn = 0
        start.wait()
        with result.lock:
            result.first = result.first or time.monotonic()
        while fallbacks < 5 and time.monotonic() < deadline:
            turn += 1
            try:
                response = client.converse(modelId="premium", inferenceConfig={"maxTokens": MAX_TOKENS},
                                           messages=_messages(number, turn))
            except Exception as exc:  # collected and asserted on: no error is expected
                with result.lock:
                    result.errors.append(repr(exc))
                break
            model = response["ResponseMetadata"]["HTTPHeaders"]["x-costkeeper-model-id"]
            with result.lock:
                result.served[model] += 1
                if model == PRO:
                    cost = _cost(response["usage"])
                    result.spend += cost
                    result.overestimate = max(result.overestimate, worst_case(_messages(number, turn), MAX_TOKENS) - cost)
                    result.last_premium = time.monotonic()
            fallbacks = fallbacks + 1 if model != PRO else 0
        client.close()

    threads = []
    key = proxies[0].issue_key("acme", "app")  # one store: every replica knows it
    for number in range(CLIENTS):
        threads.append(threading.Thread(target=client_loop, args=(proxies[number % len(proxies)], key, number)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result
