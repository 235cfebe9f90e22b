"""`costkeeper serve --workers 2`: one port, two processes (proxy/workers.py).

Which worker served a request is read from the workers' metering journals
(`<journal_dir>` for worker 0, `<journal_dir>/worker-1`): with a flush interval
of ten minutes, every metered event stays there until the proxy stops. Worker
processes are found as the supervisor's children in /proc.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from metering.sqlite_store import SQLiteStore
from metering.store import UsageRow
from tests.conftest import TEST_PRICING
from tests.e2e.clients import NOVA
from tests.processes import Process, Proxy, refuses_connections, start_proxy, wait_for

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": [{"text": "Count the sheep, briefly."}]}]
SERVING = re.compile(r"worker (\d+) \(pid (\d+)\) serving")


def _config(tmp_path: Path, flush_interval: float) -> dict[str, Any]:
    return {
        "pricing": TEST_PRICING,
        "store": {"backend": "sqlite", "path": str(tmp_path / "usage.db"), "journal_dir": str(tmp_path / "journal")},
        "metering": {"flush_interval": flush_interval},
    }




def _serving(proxy: Proxy) -> dict[int, int]:
    """Worker index → pid of its latest process that reported serving."""
    return {int(index): int(pid) for index, pid in SERVING.findall(proxy.output())}


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def _gone(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True




def _journaled(directory: Path) -> set[str]:
    """Request ids of the events in a journal's segments (not yet stored)."""
    ids = set()
    for segment in directory.glob("segment-*.jsonl"):
        for line in segment.read_bytes().splitlines():
            if line.strip():
                ids.add(json.loads(line)["request_id"])
    return ids


def _requests_metric(proxy: Proxy, org: str) -> float:
    return _metric(proxy, "costkeeper_requests_total", org=org)


def _metric(proxy: Proxy, name: str, **labels: str) -> float:
    """The sum of `name`'s samples with these labels on /metrics."""
    text = httpx.get(f"{proxy.admin_url}/metrics", timeout=5).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def _stored(store_path: Path, org: str) -> UsageRow | None:
    async def read() -> list[UsageRow]:
        async with SQLiteStore(str(store_path)) as store:
            return await store.usage_summary(0, None, ["org"])

    return next((row for row in asyncio.run(read()) if row.org == org), None)


class Callers:
    """Threads calling Converse through the proxy, each request on a new connection
    (a new client), so that the kernel hands the requests to both workers."""

    def __init__(self, url: str, key: dict[str, str], threads: int = 0) -> None:
        self._url, self._key = url, key
        self.answered: list[tuple[str, int, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self._local = threading.local()  # a session per thread: sessions are not thread-safe

    def client(self) -> Any:
        """A new client: its own connection pool."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = boto3.session.Session(
                aws_access_key_id=self._key["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=self._key["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
        config = botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=10)
        return session.client("bedrock-runtime", endpoint_url=self._url, config=config)

    def call_once(self, _index: int = 0) -> tuple[str, int, int]:
        client = self.client()
        try:
            response = client.converse(modelId=NOVA, messages=MESSAGES, inferenceConfig={"maxTokens": 20})
        finally:
            client.close()
        usage = response["usage"]
        return response["ResponseMetadata"]["RequestId"], usage["inputTokens"], usage["outputTokens"]

    def start(self) -> Callers:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[tuple[str, int, int]]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        return self.answered

    def count(self) -> int:
        with self._lock:
            return len(self.answered)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = self.call_once()
            except Exception:
                return  # the proxy is gone
            with self._lock:
                self.answered.append(answer)


@pytest.fixture
def aws_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.delenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def two_workers(tmp_path: Path, simulator: Process, aws_home: None) -> Iterator[Proxy]:
    """Usage stays in the journals until the proxy stops: the test reads who served what."""
    proxy = start_proxy(tmp_path, simulator.url, _config(tmp_path, flush_interval=600),
                        extra_args=("--workers", "2"))
    try:
        wait_for(lambda: len(_serving(proxy)) == 2, 30, "both workers to serve")
        yield proxy
    finally:
        proxy.stop(sig_timeout=30)


def test_two_workers_share_the_port_and_the_metrics_survive_a_worker_crash_and_stop_cleanly(
    two_workers: Proxy, tmp_path: Path,
) -> None:
    proxy = two_workers
    journals = {0: tmp_path / "journal", 1: tmp_path / "journal" / "worker-1"}
    callers = Callers(proxy.url, proxy.issue_key("workers", "app"))
    answered: list[tuple[str, int, int]] = []
    with ThreadPoolExecutor(4) as pool:
        # Rounds of 8 concurrent requests, each on a new connection, until both workers served some.
        for _ in range(10):
            answered += pool.map(callers.call_once, range(8))
            if all(_journaled(path) for path in journals.values()):
                break
    served = {index: _journaled(path) for index, path in journals.items()}
    assert served[0] and served[1], f"one worker served all {len(answered)} requests"
    assert not served[0] & served[1]
    assert served[0] | served[1] == {request_id for request_id, _, _ in answered}
    # Worker 0's admin port counts both workers' requests.
    wait_for(lambda: _requests_metric(proxy, "workers") == len(answered), 5, "/metrics to count every request")

    # A worker that dies is started again, replays its journal, and no count is lost.
    first = _serving(proxy)[1]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: _serving(proxy)[1] != first, 30, "worker 1 to be started again")
    assert f"worker 1 (pid {first}) was killed by SIGKILL; starting it again" in proxy.output()
    assert f"replaying {len(served[1])} metered events" in proxy.output()
    assert _requests_metric(proxy, "workers") == len(answered)
    with ThreadPoolExecutor(4) as pool:
        answered += pool.map(callers.call_once, range(8))
    wait_for(lambda: _requests_metric(proxy, "workers") == len(answered), 5, "/metrics to count every request")

    # SIGTERM: every worker flushes its journal into the store, then all exit 0.
    workers = _children(proxy.popen.pid)
    proxy.popen.send_signal(signal.SIGTERM)
    assert proxy.popen.wait(timeout=30) == 0, proxy.output()
    wait_for(lambda: all(_gone(pid) for pid in workers), 10, "the workers to be gone")
    assert "Traceback" not in proxy.output()
    row = _stored(tmp_path / "usage.db", "workers")
    assert row is not None and row.requests == len(answered)
    assert row.output_tokens == sum(output for _, _, output in answered)
    assert not any(_journaled(path) for path in journals.values())


def _own_metric(metrics_dir: Path, pid: int, name: str) -> float:
    """`name` as one worker counted it: its own multiprocess files, collected alone."""
    alone = Path(tempfile.mkdtemp())
    try:
        for file in metrics_dir.glob(f"*_{pid}.db"):
            shutil.copy(file, alone / file.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        return sum(sample.value for family in registry.collect() for sample in family.samples if sample.name == name)
    finally:
        shutil.rmtree(alone)


def test_the_store_metrics_add_up_across_workers(tmp_path: Path, simulator: Process, aws_home: None) -> None:
    proxy = start_proxy(tmp_path, simulator.url, _config(tmp_path, flush_interval=0.1), extra_args=("--workers", "2"))
    try:
        wait_for(lambda: len(_serving(proxy)) == 2, 30, "both workers to serve")
        pids = _serving(proxy)
        environ = Path(f"/proc/{pids[0]}/environ").read_bytes().split(b"\0")
        metrics_dir = Path(next(v for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")).split(b"=", 1)[1]
                           .decode())
        callers = Callers(proxy.url, proxy.issue_key("store-metrics", "app"))
        answered: list[tuple[str, int, int]] = []
        flushed = "costkeeper_store_flushed_events_total"
        with ThreadPoolExecutor(4) as pool:
            for _ in range(10):  # rounds of 8 requests on new connections, until both workers flushed some
                answered += pool.map(callers.call_once, range(8))
                # Worker 0's /metrics holds every worker's store counts, not its own alone.
                count = len(answered)
                wait_for(lambda count=count: _metric(proxy, flushed) == count, 10,
                         "/metrics to count every flushed event")
                if all(_own_metric(metrics_dir, pid, flushed) > 0 for pid in pids.values()):
                    break
        own = {index: _own_metric(metrics_dir, pid, flushed) for index, pid in pids.items()}
        assert own[0] > 0 and own[1] > 0, f"one worker served all {len(answered)} requests: {own}"
        assert _metric(proxy, "costkeeper_store_calls_total", operation="Transaction") >= 2
        assert _metric(proxy, "costkeeper_store_flush_seconds_count") >= 2
    finally:
        proxy.stop(sig_timeout=30)


def test_refused_credentials_are_tallied_across_workers(tmp_path: Path, simulator: Process, aws_home: None) -> None:
    """Each worker counts the requests it refused; worker 0's `/v1/auth-failures` and
    `/metrics` show them all (each worker publishes its tally beside its metrics)."""
    token = "workers-admin-token"
    proxy = start_proxy(tmp_path, simulator.url, _config(tmp_path, flush_interval=0.1),
                        extra_args=("--workers", "2"), env={"COSTKEEPER_ADMIN_TOKEN": token})
    try:
        wait_for(lambda: len(_serving(proxy)) == 2, 30, "both workers to serve")
        pids = _serving(proxy)
        environ = Path(f"/proc/{pids[0]}/environ").read_bytes().split(b"\0")
        metrics_dir = Path(next(v for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")).split(b"=", 1)[1]
                           .decode())
        url = f"{proxy.url}/model/{NOVA}/converse"
        sent = 0
        with ThreadPoolExecutor(4) as pool:
            for _ in range(10):  # rounds of 8 refusals, each on its own connection, until both workers refused some
                statuses = list(pool.map(lambda _: httpx.post(url, content=b"{}", timeout=10).status_code, range(8)))
                assert statuses == [403] * 8
                sent += 8
                if all(_own_metric(metrics_dir, pid, "costkeeper_auth_failures_total") > 0 for pid in pids.values()):
                    break
        assert all(_own_metric(metrics_dir, pid, "costkeeper_auth_failures_total") > 0 for pid in pids.values())

        def tallied() -> int:
            document = httpx.get(f"{proxy.admin_url}/v1/auth-failures", timeout=5,
                                 headers={"Authorization": f"Bearer {token}"}).json()
            return int(document["total"])

        wait_for(lambda: tallied() == sent, 10, "/v1/auth-failures to count every worker's refusals")
        assert _metric(proxy, "costkeeper_auth_failures_total", reason="missing") == sent
    finally:
        proxy.stop(sig_timeout=30)


def test_sigterm_closes_the_port_at_once_and_lets_every_worker_finish_its_streams(
    two_workers: Proxy, simulator: Process, tmp_path: Path,
) -> None:
    proxy = two_workers
    key = proxy.issue_key("drain", "app")
    hold = uuid.uuid4().hex
    streams = []
    for _ in range(4):  # a client each, so a connection each, most likely on both workers
        client = Callers(proxy.url, key).client()
        response = client.converse_stream(modelId=NOVA, messages=[
            {"role": "user", "content": [{"text": f"[[sim:hold={hold}]] tell a story"}]}])
        events = iter(response["stream"])
        assert "messageStart" in next(events)
        streams.append((client, events))

    proxy.popen.send_signal(signal.SIGTERM)
    # The supervisor lets go of the listening socket too: nothing accepts new connections.
    wait_for(lambda: refuses_connections(proxy.url), 10, "the data port to refuse connections")
    assert proxy.popen.poll() is None, proxy.output()
    httpx.post(f"{simulator.url}/_sim/release/{hold}", timeout=5)
    for client, events in streams:
        rest = [next(iter(event)) for event in events]
        client.close()
        assert rest[-1] == "metadata" and "messageStop" in rest
    assert proxy.popen.wait(timeout=30) == 0, proxy.output()
    row = _stored(tmp_path / "usage.db", "drain")
    assert row is not None and row.requests == 4


def test_shrinking_to_one_worker_after_a_crash_stores_every_journal_once(
    tmp_path: Path, simulator: Process, aws_home: None,
) -> None:
    proxy = start_proxy(tmp_path, simulator.url, _config(tmp_path, flush_interval=600),
                        extra_args=("--workers", "2"))
    retired = tmp_path / "journal" / "worker-1"
    try:
        wait_for(lambda: len(_serving(proxy)) == 2, 30, "both workers to serve")
        callers = Callers(proxy.url, proxy.issue_key("shrink", "app"), threads=4).start()
        wait_for(lambda: callers.count() >= 24 and bool(_journaled(retired)), 60,
                  "requests answered by both workers")
        # Everything at once, mid-traffic: the supervisor frozen first, so it restarts nobody.
        proxy.popen.send_signal(signal.SIGSTOP)
        processes = _children(proxy.popen.pid)
        for pid in processes:
            os.kill(pid, signal.SIGKILL)
        proxy.popen.send_signal(signal.SIGKILL)
        proxy.popen.wait()
        answered = callers.stop()
        wait_for(lambda: all(_gone(pid) for pid in processes), 10, "the workers to be gone")
    finally:
        proxy.stop()
    journaled = _journaled(tmp_path / "journal") | _journaled(retired)
    assert {request_id for request_id, _, _ in answered} <= journaled

    single = start_proxy(tmp_path, simulator.url, _config(tmp_path, flush_interval=0.1))
    try:
        wait_for(lambda: httpx.get(f"{single.admin_url}/readyz", timeout=5).json()["metering_backlog"] == 0,
                  30, "the replayed journal to be stored")
        assert not retired.exists(), "the retired worker's journal was not emptied"
        assert "retired worker 1" in single.output()
    finally:
        assert single.stop(sig_timeout=30) == 0, single.output()
    row = _stored(tmp_path / "usage.db", "shrink")
    assert row is not None
    (input_tokens, output_tokens), = {(i, o) for _, i, o in answered}
    # Once each: the tokens are exactly those of `requests` requests — every answered
    # request, plus at most those in flight at the kill (metered, answer lost).
    assert (row.input_tokens, row.output_tokens) == (row.requests * input_tokens, row.requests * output_tokens)
    assert len(answered) <= row.requests <= len(journaled)
