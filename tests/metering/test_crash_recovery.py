"""A real `costkeeper serve` killed with SIGKILL in the middle of boto3 traffic.

After each restart the journal is replayed; at the end the stored totals must
equal the usage of every request a client saw answered — plus at most the
requests in flight at a kill (metered, but their answer died with the proxy) —
and nothing twice. Every request of an app has the same prompt, and the
simulator's usage is a function of the prompt, so "equal" is checked exactly:
stored tokens = stored requests × the usage of one request.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from metering.dynamodb_store import DynamoDBStore
from metering.secret_box import decode_key
from metering.secret_keys import StaticKeys
from metering.sqlite_store import SQLiteStore
from metering.store import IssuedKey, Store, UsageRow
from tests.conftest import TEST_PRICING
from tests.dynamodb_local import CREDENTIALS, DynamoDBLocal
from tests.e2e.clients import NOVA, bedrock_client
from tests.processes import TEST_SECRET_KEY, Process, Proxy, start_proxy, wait_for

pytestmark = pytest.mark.slow

THREADS_PER_APP = 3
MESSAGES = [{"role": "user", "content": [{"text": "Count the sheep, briefly."}]}]


class Traffic:
    """Client threads that call the proxy until stopped or the proxy dies."""

    def __init__(self, proxy: Proxy, keys: dict[str, IssuedKey]) -> None:
        self.answered: dict[str, list[tuple[int, int]]] = {app: [] for app in keys}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(proxy.url, app, key), daemon=True)
            for app, key in keys.items() for _ in range(THREADS_PER_APP)
        ]
        for thread in self._threads:
            thread.start()

    def count(self) -> int:
        with self._lock:
            return sum(len(usages) for usages in self.answered.values())

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, url: str, app: str, key: IssuedKey) -> None:
        client = bedrock_client({"AWS_ACCESS_KEY_ID": key.access_key_id, "AWS_SECRET_ACCESS_KEY": key.secret},
                                endpoint_url=url, read_timeout=10)
        try:
            while not self._stop.is_set():
                try:
                    usage = self._stream(client) if app == "stream" else self._converse(client)
                except Exception:
                    return  # the proxy is gone: this thread's work is over
                with self._lock:
                    self.answered[app].append(usage)
        finally:
            client.close()

    @staticmethod
    def _converse(client: Any) -> tuple[int, int]:
        usage = client.converse(modelId=NOVA, messages=MESSAGES, inferenceConfig={"maxTokens": 20})["usage"]
        return usage["inputTokens"], usage["outputTokens"]

    @staticmethod
    def _stream(client: Any) -> tuple[int, int]:
        response = client.converse_stream(modelId=NOVA, messages=MESSAGES, inferenceConfig={"maxTokens": 20})
        usage = None
        for event in response["stream"]:
            if "metadata" in event:
                usage = event["metadata"]["usage"]
        assert usage is not None, "a stream without its metadata event was not answered"
        return usage["inputTokens"], usage["outputTokens"]




def _backlog(proxy: Proxy) -> int:
    return int(httpx.get(f"{proxy.admin_url}/readyz", timeout=5).json()["metering_backlog"])


@pytest.mark.parametrize("backend", ["sqlite", "dynamodb"])
def test_sigkill_mid_traffic_loses_and_doubles_nothing(
    backend: str, tmp_path: Path, simulator: Process, request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store_config: dict[str, Any] = {"backend": "sqlite", "path": str(tmp_path / "usage.db")}
    if backend == "dynamodb":
        ddb: DynamoDBLocal = request.getfixturevalue("dynamodb_local")
        request.getfixturevalue("aws_env")
        store_config = {"backend": "dynamodb", "table": f"crash-{time.time_ns()}", "endpoint_url": ddb.endpoint_url,
                        "max_attempts": 2, "read_timeout": 2.0}
    store_config["journal_dir"] = str(tmp_path / "journal")
    config = {"pricing": TEST_PRICING, "store": store_config, "metering": {"flush_interval": 0.1}}
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.delenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", raising=False)

    def open_store() -> Store:
        if backend == "sqlite":
            return SQLiteStore(store_config["path"])
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["AWS_ACCESS_KEY_ID"])
        return DynamoDBStore(table=store_config["table"], region="us-east-1", endpoint_url=store_config["endpoint_url"],
                             key_source=StaticKeys(decode_key(TEST_SECRET_KEY, "key")))  # the proxy's key

    async def with_store(action: Callable[[Store], Any]) -> Any:
        store = open_store()
        await store.open()
        try:
            return await action(store)
        finally:
            await store.aclose()

    proxy = start_proxy(tmp_path, simulator.url, config)  # also `store init`
    keys: dict[str, IssuedKey] = {}
    for app in ("sync", "stream"):
        keys[app] = asyncio.run(with_store(lambda store, app=app: store.create_key("crash-org", app)))

    answered: dict[str, list[tuple[int, int]]] = {"sync": [], "stream": []}
    in_flight_bound = 0
    try:
        for round_, target in enumerate((60, 40)):
            traffic = Traffic(proxy, keys)
            wait_for(lambda t=traffic, n=target: t.count() >= n, 60, f"{target} answered requests")
            proxy.popen.send_signal(signal.SIGKILL)  # mid-traffic: requests in every state
            proxy.popen.wait()
            traffic.stop()
            for app, usages in traffic.answered.items():
                answered[app].extend(usages)
            in_flight_bound += 2 * THREADS_PER_APP
            proxy = start_proxy(tmp_path, simulator.url, config)  # replays the journal
            assert proxy.popen.poll() is None, f"restart {round_} failed"
        wait_for(lambda: _backlog(proxy) == 0, 60, "the replayed backlog to drain")
    finally:
        proxy.stop()

    rows: list[UsageRow] = asyncio.run(with_store(
        lambda store: store.usage_summary(0, None, ["org", "app"])))
    stored = {row.app: row for row in rows if row.org == "crash-org"}
    missing = {}
    for app, usages in answered.items():
        assert usages, f"no {app} request was answered"
        assert len(set(usages)) == 1, f"the simulator's usage varied for one prompt: {set(usages)}"
        (input_tokens, output_tokens), = set(usages)
        row = stored[app]
        # Counted once each: the tokens are exactly those of `requests` requests.
        assert (row.input_tokens, row.output_tokens) == (row.requests * input_tokens, row.requests * output_tokens)
        # Beyond the answered requests, only requests in flight at a kill.
        assert row.requests <= len(usages) + in_flight_bound, (app, len(usages), row.requests)
        if row.requests < len(usages):
            missing[app] = len(usages) - row.requests
    # Every answered request is counted: the proxy records (and the pipeline journals)
    # a request's usage before the byte that completes its response goes out.
    assert not missing, f"answered but never recorded: {missing}"
