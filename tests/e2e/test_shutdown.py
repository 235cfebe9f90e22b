"""Graceful shutdown of a real `costkeeper serve` process (issue 7): on SIGTERM it
stops accepting, lets an open stream finish, flushes the metered usage to the
store and exits 0."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_PRICING
from tests.e2e.clients import NOVA, bedrock_client, wait_for_event
from tests.processes import Process, Proxy, refuses_connections, start_proxy, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def lone_proxy(tmp_path: Path, simulator: Process) -> Iterator[Proxy]:
    """A proxy of its own (the test stops it) that stores usage only when it shuts
    down: its periodic flush would come after a minute."""
    process = start_proxy(tmp_path, simulator.url, {
        "pricing": TEST_PRICING,
        "metering": {"flush_interval": 60},
    })
    yield process
    process.stop()






def test_sigterm_lets_an_open_stream_finish_flushes_usage_and_exits_zero(
    lone_proxy: Proxy, simulator: Process, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = lone_proxy.issue_key("acme", "drain")
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", lone_proxy.url)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    client = bedrock_client(key, read_timeout=30)
    hold = uuid.uuid4().hex
    response = client.converse_stream(
        modelId=NOVA, messages=[{"role": "user", "content": [{"text": f"[[sim:hold={hold}]] tell a story"}]}]
    )
    request_id = response["ResponseMetadata"]["RequestId"]
    events = iter(response["stream"])
    assert "messageStart" in next(events)

    lone_proxy.popen.send_signal(signal.SIGTERM)
    # It stops accepting at once, while the stream stays open and the admin port answers.
    wait_for(lambda: refuses_connections(lone_proxy.url), 10, "the proxy to stop accepting after SIGTERM")
    assert lone_proxy.popen.poll() is None, lone_proxy.output()
    assert httpx.get(f"{lone_proxy.admin_url}/healthz", timeout=5).status_code == 200

    # The upstream goes on a while later; the client still gets the whole stream.
    release = threading.Timer(1.0, lambda: httpx.post(f"{simulator.url}/_sim/release/{hold}", timeout=5))
    release.start()
    try:
        rest = [next(iter(event)) for event in events]
    finally:
        release.join()
        client.close()
    assert rest[-1] == "metadata" and "messageStop" in rest

    assert lone_proxy.popen.wait(timeout=30) == 0, lone_proxy.output()
    assert "Traceback" not in lone_proxy.output()
    # Stored by the shutdown flush (the periodic one was a minute away).
    event = wait_for_event(lone_proxy, request_id, timeout=2)
    assert event.output_tokens > 0 and event.org == "acme" and event.app == "drain"
    assert refuses_connections(lone_proxy.admin_url)


def test_sigterm_without_traffic_exits_zero_quickly(lone_proxy: Proxy) -> None:
    started = time.monotonic()
    lone_proxy.popen.send_signal(signal.SIGTERM)
    assert lone_proxy.popen.wait(timeout=15) == 0, lone_proxy.output()
    assert time.monotonic() - started < 10
    assert refuses_connections(lone_proxy.url) and refuses_connections(lone_proxy.admin_url)
