"""/readyz reflects the metering backlog: a store outage alone keeps the proxy
serving (fail-open), a backlog beyond `metering.max_backlog` makes it unready."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from metering.events import UsageEvent
from proxy.admin.app import create_admin_app
from proxy.app import CostKeeper
from proxy.config_load import load_config

pytestmark = pytest.mark.anyio

MakeEvent = Callable[..., UsageEvent]


def dead_endpoint() -> str:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_readyz_turns_unready_past_the_backlog_limit(tmp_path: Path, make_event: MakeEvent,
                                                           aws_env: None) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "store": {"backend": "dynamodb", "endpoint_url": dead_endpoint(), "journal_dir": str(tmp_path / "journal"),
                  "max_attempts": 1, "connect_timeout": 0.2, "retry_base": 0.02, "retry_max": 0.05},
        "metering": {"flush_interval": 0.02, "max_backlog": 3, "drain_timeout": 0.1},
    }))
    keeper = CostKeeper(load_config(path, environ={}))
    await keeper.startup()
    admin = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_admin_app(keeper)), base_url="http://admin")
    try:
        for i in range(3):
            keeper.recorder.record(make_event(f"r{i}"))
        for _ in range(500):
            if not keeper.recorder.healthy:
                break
            await asyncio.sleep(0.01)
        response = await admin.get("/readyz")
        assert response.status_code == 200  # store down, backlog within bounds: still serving
        assert response.json()["metering_backlog"] == 3 and response.json()["store_healthy"] is False

        keeper.recorder.record(make_event("r3"))
        response = await admin.get("/readyz")
        assert response.status_code == 503
        assert response.json()["metering_backlog"] == 4 and response.json()["metering_backlog_ok"] is False
    finally:
        await admin.aclose()
        await keeper.shutdown()
    assert sorted(p.name for p in (tmp_path / "journal").glob("segment-*")), "the backlog stays in the journal"
