"""DynamoDB going away and coming back, with a real DynamoDB Local per test:
the pipeline keeps accepting events, the backlog grows and is reported, and
once the store is back the backlog drains — nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from botocore.exceptions import BotoCoreError

from metering.dynamodb_store import DynamoDBStore
from metering.events import UsageEvent
from metering.recorder import UsageRecorder
from tests.dynamodb_local import DynamoDBLocal, DynamoDBLocalUnavailable, start_dynamodb_local

pytestmark = pytest.mark.anyio

MakeEvent = Callable[..., UsageEvent]
DAY = "2025-03-10"
MODEL = "amazon.nova-pro-v1:0"


def _start(log_dir: Path, port: int | None = None) -> DynamoDBLocal:
    try:
        return start_dynamodb_local(log_dir, port)
    except DynamoDBLocalUnavailable as exc:
        pytest.fail(f"DynamoDB Local is required for these tests: {exc}", pytrace=False)


@pytest.fixture
def private_dynamodb(tmp_path: Path) -> Iterator[DynamoDBLocal]:
    """A DynamoDB Local of this test's own, free to be suspended."""
    server = _start(tmp_path)
    yield server
    server.stop()


def _store(endpoint_url: str) -> DynamoDBStore:
    # Fail fast while the store is away: one attempt, short timeouts.
    return DynamoDBStore(table="costkeeper-faults", region="us-east-1", endpoint_url=endpoint_url, shards=2,
                         max_attempts=1, connect_timeout=0.5, read_timeout=0.5)


async def _wait(predicate: Callable[[], bool], within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _traffic(recorder: UsageRecorder, make_event: MakeEvent, prefix: str, count: int) -> None:
    for i in range(count):
        recorder.record(make_event(f"{prefix}-{i}", quota_scope="acme", cost_pico_usd=3, input_tokens=i))
        await asyncio.sleep(0.002)


@pytest.fixture
async def suspended_store(private_dynamodb: DynamoDBLocal, aws_env: None) -> AsyncIterator[DynamoDBStore]:
    async with _store(private_dynamodb.endpoint_url) as store:
        await _init_when_answering(store)
        yield store


async def test_suspended_store_backlog_grows_then_drains(
    private_dynamodb: DynamoDBLocal, suspended_store: DynamoDBStore, make_event: MakeEvent, tmp_path: Path
) -> None:
    recorder = UsageRecorder(suspended_store, tmp_path / "journal", flush_interval=0.05,
                             retry_base=0.05, max_backoff=0.3)
    await recorder.start()
    await _traffic(recorder, make_event, "before", 50)
    await _wait(lambda: recorder.backlog == 0)

    private_dynamodb.suspend()  # a partition: connections hang, calls time out
    try:
        await _traffic(recorder, make_event, "during", 150)
        await _wait(lambda: not recorder.healthy)
        assert recorder.backlog >= 100  # what arrived since the outage began waits in the journal
    finally:
        private_dynamodb.resume()
    await _traffic(recorder, make_event, "after", 50)
    await _wait(lambda: recorder.backlog == 0 and recorder.healthy)
    await recorder.stop()

    [row] = await suspended_store.usage_summary(0, None, [])
    assert (row.requests, row.cost_pico_usd, row.input_tokens) == (250, 750, 2 * sum(range(50)) + sum(range(150)))
    assert (await suspended_store.read_budget("acme", DAY)).model(MODEL).spent == 750


async def test_a_store_that_is_not_there_yet(make_event: MakeEvent, tmp_path: Path, aws_env: None) -> None:
    """Started while DynamoDB is unreachable (nothing listens on its port): the
    proxy's pipeline keeps every event until DynamoDB appears on that port."""
    server = _start(tmp_path)  # find a port DynamoDB Local can use, then free it
    port = server.port
    server.stop()
    async with _store(f"http://127.0.0.1:{port}") as store:
        recorder = UsageRecorder(store, tmp_path / "journal", flush_interval=0.05, retry_base=0.05, max_backoff=0.3)
        await recorder.start()
        await _traffic(recorder, make_event, "early", 40)
        await _wait(lambda: not recorder.healthy)
        assert recorder.backlog == 40

        server = _start(tmp_path, port)
        try:
            await _init_when_answering(store)
            await _wait(lambda: recorder.backlog == 0 and recorder.healthy)
            await recorder.stop()
            [row] = await store.usage_summary(0, None, [])
            assert (row.requests, row.cost_pico_usd) == (40, 120)
        finally:
            server.stop()


async def _init_when_answering(store: DynamoDBStore, patience: float = 60.0) -> None:
    """A DynamoDB Local that has just started may accept connections before it
    answers within the client's read timeout (seen on a loaded 2-core machine)."""
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        try:
            await store.init()
            return
        except BotoCoreError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
