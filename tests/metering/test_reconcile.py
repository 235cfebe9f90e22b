"""Reconciliation: metered tokens per model and hour against CloudWatch (moto's server)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

from metering.events import UsageEvent
from metering.reconcile import HOUR, compare
from metering.sqlite_store import SQLiteStore
from tests.processes import costkeeper, free_port

NOVA = "amazon.nova-lite-v1:0"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def cloudwatch_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_compare_flags_only_differences_beyond_the_tolerance() -> None:
    metered = {(NOVA, 0): (100, 50), (NOVA, HOUR): (100, 50), (NOVA, 2 * HOUR): (5, 0)}
    bedrock = {(NOVA, 0): (100, 50), (NOVA, HOUR): (101, 50), ("other", 0): (7, 7)}
    diffs = {(d.model, d.hour): d for d in compare(metered, bedrock, tolerance=0.02)}
    assert diffs[(NOVA, "1970-01-01T00:00Z")].ok
    assert diffs[(NOVA, "1970-01-01T01:00Z")].ok and diffs[(NOVA, "1970-01-01T01:00Z")].input_diff == -1
    assert not diffs[(NOVA, "1970-01-01T02:00Z")].ok  # metered, unknown to Bedrock
    assert not diffs[("other", "1970-01-01T00:00Z")].ok  # Bedrock traffic that bypassed the proxy
    assert not compare({(NOVA, 0): (100, 50)}, {(NOVA, 0): (101, 50)}, tolerance=0)[0].ok


def _event(index: int, timestamp: float, input_tokens: int, output_tokens: int) -> UsageEvent:
    return UsageEvent(
        request_id=f"r-{index}", timestamp=timestamp, org="acme", app="bot", operation="Converse",
        requested_model=NOVA, model=NOVA, input_tokens=input_tokens, output_tokens=output_tokens,
        cache_read_tokens=0, cache_write_tokens=0, cost_pico_usd=10, priced=True, latency_ms=5.0,
        first_byte_ms=None, status=200, estimated=False,
    )


@pytest.mark.slow
def test_reconcile_against_moto_cloudwatch(tmp_path: Path, cloudwatch_url: str) -> None:
    hour_now = time.time() // HOUR * HOUR
    hours = [hour_now - 3 * HOUR, hour_now - 2 * HOUR, hour_now - HOUR]
    store_path = tmp_path / "store.db"
    events = []
    for h, hour in enumerate(hours):
        events += [_event(10 * h, hour + 60, 1000, 200), _event(10 * h + 1, hour + 1800, 500, 100)]
    # A response the proxy served from its cache never reached Bedrock.
    events.append(replace(_event(99, hours[0] + 90, 7777, 7777), cached=True))

    async def seed() -> None:
        async with SQLiteStore(store_path) as store:
            await store.write_events(events)

    asyncio.run(seed())
    client = boto3.client("cloudwatch", endpoint_url=cloudwatch_url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    for h, hour in enumerate(hours):
        off = 250 if h == 1 else 0  # Bedrock saw more input tokens in the middle hour
        for metric, value in (("InputTokenCount", 1500 + off), ("OutputTokenCount", 300)):
            client.put_metric_data(Namespace="AWS/Bedrock", MetricData=[{
                "MetricName": metric, "Dimensions": [{"Name": "ModelId", "Value": NOVA}],
                "Timestamp": datetime.fromtimestamp(hour + 600, UTC), "Value": value, "Unit": "Count",
            }])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"store": {"backend": "sqlite", "path": str(store_path)}}))
    args = ("reconcile", "--config", str(config), "--days", "2", "--endpoint-url", cloudwatch_url,
            "--region", "us-east-1")

    result = costkeeper(*args, "--format", "json", env=CREDS, check=False)
    assert result.returncode == 1, result.stderr
    rows = {row["hour"]: row for row in json.loads(result.stdout)}
    stamps = [datetime.fromtimestamp(hour, UTC).strftime("%Y-%m-%dT%H:00Z") for hour in hours]
    assert set(rows) == set(stamps)
    for stamp in (stamps[0], stamps[2]):
        assert rows[stamp]["ok"] and rows[stamp]["metered_input"] == rows[stamp]["bedrock_input"] == 1500
        assert rows[stamp]["metered_output"] == rows[stamp]["bedrock_output"] == 300
    off = rows[stamps[1]]
    assert not off["ok"] and off["input_diff"] == -250 and off["output_diff"] == 0

    table = costkeeper(*args, env=CREDS, check=False)
    assert table.returncode == 1
    assert [line.split()[-1] for line in table.stdout.splitlines()[1:]] == ["ok", "MISMATCH", "ok"]
    assert costkeeper(*args, "--tolerance", "0.2", env=CREDS, check=False).returncode == 0
