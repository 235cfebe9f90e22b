"""Spend alerts: one webhook POST and one JSON log line per crossed threshold per UTC day."""

from __future__ import annotations

import asyncio
import calendar
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from adapters import family_of
from adapters.translate import can_translate
from metering.events import UsageEvent, utc_day
from proxy.admin.alerts import Alerter
from proxy.config import AlertsConfig
from proxy.policies import Policies
from proxy.policy_build import build_policies
from tests.metering.budget_memory import MemoryBudgetStore
from tests.processes import free_port

NOVA = "amazon.nova-lite-v1:0"
#: 2026-03-10 12:00:00 UTC
T0 = float(calendar.timegm((2026, 3, 10, 12, 0, 0)))
DAY = utc_day(T0)


class Receiver:
    """A webhook on 127.0.0.1 in a thread; keeps every JSON body it was POSTed."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.close()


def _policies() -> Policies:
    return build_policies(
        models={"cheap": NOVA}, fallback=["cheap"], orgs={"acme": {"daily_quota_usd": {"cheap": 10}}},
        quotas=None, priced=lambda m: True, family_of=family_of, can_translate=can_translate,
    )


#: pico-USD per micro-USD: the amounts below read as micro-USD.
MICRO = 10**6


def _event(timestamp: float = T0, cost: int = 1_000_000 * MICRO, scope: str = "acme") -> UsageEvent:
    return UsageEvent(
        request_id=f"r-{timestamp}-{cost}", timestamp=timestamp, org="acme", app="bot", operation="Converse",
        requested_model="cheap", model=NOVA, input_tokens=10, output_tokens=20, cache_read_tokens=0,
        cache_write_tokens=0, cost_pico_usd=cost, priced=True, latency_ms=5.0, first_byte_ms=None, status=200,
        estimated=False, quota_scope=scope,
    )


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_one_post_per_crossed_threshold_per_day(receiver: Receiver, capsys: pytest.CaptureFixture[str]) -> None:
    store, clock = MemoryBudgetStore(), Clock()
    config = AlertsConfig(webhook_url=receiver.url, check_interval=0.05)

    async def scenario() -> None:
        alerter = Alerter(config, _policies(), store, clock=clock)
        await alerter.start()
        spend = [5_000_000, 8_500_000, 9_000_000, 10_200_000, 11_000_000]  # 50 %, 85 %, 90 %, 102 %, 110 %
        for committed in spend:
            store.committed[("acme", DAY, NOVA)] = committed * MICRO
            alerter.observe(_event(clock.now))
            await alerter.check()
            clock.now += 1
        await alerter.stop()
        # The next UTC day starts with fresh thresholds.
        clock.now = T0 + 86_400
        store.committed[("acme", utc_day(clock.now), NOVA)] = 9_000_000 * MICRO
        alerter.observe(_event(clock.now))
        await alerter.start()
        await alerter.check()
        await alerter.stop()

    asyncio.run(scenario())
    bodies = sorted(receiver.bodies, key=lambda b: (b["day"], b["threshold"]))
    assert [(b["day"], b["threshold"]) for b in bodies] == [(DAY, 0.8), (DAY, 1.0), (utc_day(T0 + 86_400), 0.8)]
    first, second = bodies[0], bodies[1]
    assert (first["kind"], first["scope"], first["model"], first["ratio"]) == ("quota", "acme", NOVA, 0.85)
    assert second["ratio"] == 1.02 and second["spent_usd"] == 10.2 and second["quota_usd"] == 10.0
    assert "80%" in first["text"] and "acme" in first["text"] and NOVA in first["text"]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(line["kind"], line["threshold"]) for line in lines] == [("quota", 0.8), ("quota", 1.0), ("quota", 0.8)]
    assert all(receiver.url not in json.dumps(line) for line in lines)


def test_an_exhausted_model_counts_as_100_percent() -> None:
    store = MemoryBudgetStore()
    store.committed[("acme", DAY, NOVA)] = 9_700_000 * MICRO  # worst-case admission stops short of the quota
    store.exhausted[("acme", DAY)] = {NOVA}

    async def scenario() -> list[dict[str, Any]]:
        alerter = Alerter(AlertsConfig(), _policies(), store, clock=Clock())
        alerter.observe(_event())
        return await alerter.check()

    assert [alert["threshold"] for alert in asyncio.run(scenario())] == [0.8, 1.0]


def test_hourly_cost_alert_counts_only_the_last_hour() -> None:
    clock = Clock()

    async def scenario() -> list[list[dict[str, Any]]]:
        alerter = Alerter(AlertsConfig(thresholds=(), hourly_cost_usd=5.0), _policies(), MemoryBudgetStore(),
                          clock=clock)
        alerter.observe(_event(T0 - 3_700, cost=4_000_000 * MICRO, scope=""))  # older than an hour
        alerter.observe(_event(T0 - 60, cost=3_000_000 * MICRO, scope=""))
        checks = [await alerter.check()]
        alerter.observe(_event(T0, cost=2_500_000 * MICRO, scope=""))
        checks.append(await alerter.check())
        alerter.observe(_event(T0, cost=9_000_000 * MICRO, scope=""))
        checks.append(await alerter.check())  # once per day
        return checks

    below, crossed, again = asyncio.run(scenario())
    assert below == [] and again == []
    assert [(a["kind"], a["cost_usd"], a["threshold_usd"]) for a in crossed] == [("hourly_cost", 5.5, 5.0)]


def test_a_webhook_that_is_down_never_reaches_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryBudgetStore()
    store.committed[("acme", DAY, NOVA)] = 10_000_000 * MICRO
    config = AlertsConfig(webhook_url=f"http://127.0.0.1:{free_port()}/hook", timeout=0.5, retries=1,
                          check_interval=0.05)

    async def scenario() -> None:
        alerter = Alerter(config, _policies(), store, clock=Clock())
        await alerter.start()
        alerter.observe(_event())
        await asyncio.sleep(0.3)
        await alerter.stop(drain_timeout=5.0)

    asyncio.run(scenario())
    failures = [r.getMessage() for r in caplog.records if "alert webhook failed" in r.getMessage()]
    assert len(failures) == 2  # one per threshold, each after 2 attempts
    assert all("127.0.0.1" not in message for message in failures)
