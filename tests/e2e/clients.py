"""Real clients pointed at a proxy the way users do it: by endpoint setting only."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import boto3
import botocore.config

from metering.events import UsageEvent
from metering.sqlite_store import SQLiteStore
from tests.processes import Proxy

NOVA = "us.amazon.nova-micro-v1:0"
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
MODELS = {"nova": NOVA, "anthropic": CLAUDE}


def bedrock_client(key: dict[str, str], *, read_timeout: float = 20, **kwargs: Any) -> Any:
    """A bedrock-runtime client; the endpoint comes from AWS_ENDPOINT_URL_BEDROCK_RUNTIME."""
    session = boto3.session.Session(
        aws_access_key_id=key["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=key["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    config = botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=read_timeout)
    return session.client("bedrock-runtime", config=config, **kwargs)


def invoke_body(family: str, prompt: str, max_tokens: int = 40) -> bytes:
    if family == "anthropic":
        document: dict[str, Any] = {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": max_tokens,
            "system": "You are terse.",
            "messages": [{"role": "user", "content": prompt}],
        }
    else:
        document = {
            "schemaVersion": "messages-v1",
            "system": [{"text": "You are terse."}],
            "messages": [{"role": "user", "content": [{"text": prompt}]}],
            "inferenceConfig": {"maxTokens": max_tokens},
        }
    return json.dumps(document).encode()


def wait_for_event(proxy: Proxy, request_id: str, timeout: float = 10.0) -> UsageEvent:
    """The metered event for a request, once the recorder has flushed it (SQLite store)."""

    async def poll() -> UsageEvent | None:
        async with SQLiteStore(str(proxy.store_path)) as store:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                event = await store.get_event(request_id)
                if event is not None:
                    return event
                await asyncio.sleep(0.05)
        return None

    event = asyncio.run(poll())
    if event is None:
        raise AssertionError(f"no usage event for request {request_id}")
    return event


def refusal_lines(proxy: Proxy, at_least: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The proxy's `auth_failure` access-log lines, once at least `at_least` are out
    (lines are written in batches); all there are after `timeout` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(line) for line in proxy.output().splitlines() if line.startswith('{"type":"auth_failure"')]
        if len(lines) >= at_least or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)
