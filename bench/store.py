"""The metering point of `make bench`: store writes per 1,000 requests, flush latency.

A proxy with the DynamoDB backend on DynamoDB Local (production metering
defaults: one flush a second) serves `requests` Converse calls from 16
clients (trust mode, one caller whose org has a daily quota far from reached,
so every request is admitted against a budget lease: metering/leases.py);
once its metering backlog is empty, its own store metrics (`costkeeper_store_*`
on /metrics, counted by a botocore hook on every DynamoDB call) give calls,
items written and flush times, and `costkeeper_quota_lease_writes_total` the
lease writes among them (claims, renewals, give-backs). Only
where DynamoDB Local may run (a private network namespace: `make bench` runs
under tools/isolated); elsewhere the point is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.client import MODEL
from metering.store_stats import WRITE_OPERATIONS
from tests.dynamodb_local import DynamoDBLocalUnavailable, new_table_name, start_dynamodb_local
from tests.processes import start_proxy

__all__ = ["StorePoint", "measure_store"]


@dataclass
class StorePoint:
    requests: int = 0
    seconds: float = 0.0
    calls: dict[str, float] = field(default_factory=dict)
    items_written: float = 0.0
    flushes: float = 0.0
    flush_seconds_sum: float = 0.0
    flush_buckets: list[tuple[float, float]] = field(default_factory=list)
    #: Budget lease writes by kind (claim, renew, give_back, reclaim, exhausted), included in `calls`.
    lease_writes: dict[str, float] = field(default_factory=dict)
    skipped: str = ""

    @property
    def writes(self) -> float:
        return sum(count for op, count in self.calls.items() if op in WRITE_OPERATIONS)

    def per_thousand(self, value: float) -> float:
        return value * 1000 / self.requests if self.requests else float("nan")

    def flush_quantile(self, q: float) -> float:
        """Upper bucket bound holding the q-quantile of flush times (seconds)."""
        total = self.flushes
        for bound, count in self.flush_buckets:
            if total and count >= q * total:
                return bound
        return float("inf")


def _scrape(admin_url: str) -> dict[str, list[Any]]:
    text = httpx.get(f"{admin_url}/metrics", timeout=10).text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


async def measure_store(tmp: Path, upstream_url: str, requests: int,
                        drive: Any) -> StorePoint:
    """`drive(port, raw_request_count)` sends the traffic (bench/client.py's load client)."""
    point = StorePoint()
    try:
        dynamodb = start_dynamodb_local(tmp)
    except DynamoDBLocalUnavailable as exc:
        point.skipped = str(exc).split(".")[0]
        return point
    proxy = None
    try:
        config = {"auth": {"mode": "trust"}, "metering": {},
                  # A quota far from reached: the steady state of budget leases (large slices).
                  "pricing": {MODEL: {"input": 1.0, "output": 5.0}},
                  "orgs": {"default": {"daily_quota_usd": {MODEL: 10_000}}},
                  "store": {"backend": "dynamodb", "table": new_table_name(),
                            "endpoint_url": dynamodb.endpoint_url, "journal_dir": str(tmp / "journal")}}
        proxy = start_proxy(tmp, upstream_url, config, upstream_credentials=("AKIDBENCHUPSTREAM001", "bench-secret"))
        port = int(proxy.url.rsplit(":", 1)[1])
        before = _scrape(proxy.admin_url)
        started = time.perf_counter()
        point.requests = await drive(port, requests)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until every event is in DynamoDB
            await asyncio.sleep(0.5)
            after = _scrape(proxy.admin_url)
            backlog = after["costkeeper_metering_backlog"][0].value
            events = sum(s.value for s in after.get("costkeeper_store_flushed_events", []) if s.name.endswith("_total"))
            if backlog == 0 and events >= point.requests:
                break
        point.seconds = time.perf_counter() - started

        def counted(name: str, samples: dict[str, list[Any]]) -> dict[str, float]:
            return {s.labels.get("operation", ""): s.value for s in samples.get(name, []) if s.name.endswith("_total")}

        calls_after, calls_before = counted("costkeeper_store_calls", after), counted("costkeeper_store_calls", before)
        point.calls = {op: calls_after[op] - calls_before.get(op, 0) for op in calls_after}
        leases_after = {s.labels.get("kind", ""): s.value for s in after.get("costkeeper_quota_lease_writes", [])
                        if s.name.endswith("_total")}
        leases_before = {s.labels.get("kind", ""): s.value for s in before.get("costkeeper_quota_lease_writes", [])
                         if s.name.endswith("_total")}
        point.lease_writes = {kind: leases_after[kind] - leases_before.get(kind, 0) for kind in leases_after}
        point.items_written = (sum(counted("costkeeper_store_items_written", after).values())
                               - sum(counted("costkeeper_store_items_written", before).values()))
        flush = {(s.name, s.labels.get("le")): s.value for s in after.get("costkeeper_store_flush_seconds", [])}
        flush_before = {(s.name, s.labels.get("le")): s.value for s in before.get("costkeeper_store_flush_seconds", [])}
        delta = {key: value - flush_before.get(key, 0) for key, value in flush.items()}
        point.flushes = delta.get(("costkeeper_store_flush_seconds_count", None), 0)
        point.flush_seconds_sum = delta.get(("costkeeper_store_flush_seconds_sum", None), 0)
        point.flush_buckets = sorted((float(le), value) for (name, le), value in delta.items()
                                     if name.endswith("_bucket") and le is not None)
    finally:
        if proxy is not None:
            proxy.stop()
        dynamodb.stop()
    return point
