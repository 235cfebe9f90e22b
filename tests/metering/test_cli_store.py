"""`costkeeper store init`, `keys` and `usage` against a DynamoDB table (real CLI processes)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from metering.dynamodb_store import DynamoDBStore
from metering.events import UsageEvent
from tests.dynamodb_local import CREDENTIALS, DynamoDBLocal, new_table_name
from tests.processes import TEST_SECRET_KEY, costkeeper

SECRET_KEY = {"COSTKEEPER_SECRET_KEY": TEST_SECRET_KEY}

pytestmark = pytest.mark.slow


def test_cli_on_dynamodb(tmp_path: Path, dynamodb_local: DynamoDBLocal, aws_env: None,
                         make_event: Callable[..., UsageEvent]) -> None:
    table = new_table_name()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"store": {"backend": "dynamodb", "table": table,
                                                "endpoint_url": dynamodb_local.endpoint_url}}))

    def cli(*args: str) -> str:
        return costkeeper(*args, "--config", str(config), env={**CREDENTIALS, **SECRET_KEY}).stdout

    assert "created the table" in cli("store", "init")
    assert "already complete" in cli("store", "init")  # idempotent
    created = dict(line.split("=", 1) for line in cli("keys", "create", "--org", "acme", "--app", "cli").splitlines()
                   if line and not line.startswith("#"))
    deadline = time.monotonic() + 10
    while created["AWS_ACCESS_KEY_ID"] not in cli("keys", "list"):  # listed through the GSI
        assert time.monotonic() < deadline
        time.sleep(0.1)

    async def write() -> None:
        async with DynamoDBStore(table=table, region="us-east-1", endpoint_url=dynamodb_local.endpoint_url) as store:
            await store.write_events([make_event(f"r{i}", timestamp=time.time(), cost_pico_usd=5) for i in range(3)])

    asyncio.run(write())
    report = json.loads(cli("usage", "--by", "org,model", "--format", "json"))
    assert report["total"]["requests"] == 3 and report["total"]["cost_pico_usd"] == 15
    by_base = json.loads(cli("usage", "--by", "base_model", "--format", "json"))
    assert [(row["base_model"], row["requests"]) for row in by_base["rows"]] == [("amazon.nova-pro-v1:0", 3)]
    refused = costkeeper("usage", "--by", "operation", "--config", str(config), env=CREDENTIALS, check=False)
    assert refused.returncode == 2 and "not by operation" in refused.stderr
