"""UsageRecorder against a real SQLite store (wrapped to fail on demand).

Plain `asyncio.run` inside sync tests: no pytest-asyncio configuration needed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence

import pytest

from metering.events import UsageEvent
from metering.recorder import UsageRecorder
from metering.sqlite_store import SQLiteStore
from metering.store import UsageRow

MakeEvent = Callable[..., UsageEvent]


class FlakyStore:
    """The real store, whose writes fail while `failing` is set.

    `fail_after_write` makes a write land and *then* raise, as a timeout after
    a commit would: the retry must not count it twice.
    """

    def __init__(self, inner: SQLiteStore) -> None:
        self.inner = inner
        self.failing = False
        self.fail_after_write = False
        self.attempts = 0
        self._lock = threading.Lock()

    def write_events(self, events: Sequence[UsageEvent]) -> None:
        with self._lock:
            self.attempts += 1
        if self.failing:
            raise sqlite3.OperationalError("database is locked")
        self.inner.write_events(events)
        if self.fail_after_write:
            self.fail_after_write = False
            raise TimeoutError("write landed, acknowledgement lost")

    def get_event(self, request_id: str) -> UsageEvent | None:
        return self.inner.get_event(request_id)

    def usage_summary(self, since: float, until: float | None, by: Sequence[str]) -> list[UsageRow]:
        return self.inner.usage_summary(since, until, by)


def stored(store: SQLiteStore) -> int:
    return sum(row.requests for row in store.usage_summary(0, None, []))


async def wait_until(predicate: Callable[[], bool], within: float = 3.0) -> float:
    """Seconds it took for `predicate` to hold; fails after `within`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > within:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.005)
    return loop.time() - start


def test_writes_within_the_flush_interval(store: SQLiteStore, make_event: MakeEvent) -> None:
    async def main() -> None:
        recorder = UsageRecorder(store, flush_interval=0.05)
        await recorder.start()
        recorder.record(make_event("r1"))
        assert recorder.backlog == 1
        elapsed = await wait_until(lambda: store.get_event("r1") is not None)
        assert elapsed < 1.0
        assert recorder.backlog == 0
        await recorder.stop()

    asyncio.run(main())


def test_a_full_batch_is_written_without_waiting_for_the_interval(
    store: SQLiteStore, make_event: MakeEvent
) -> None:
    async def main() -> None:
        recorder = UsageRecorder(store, flush_interval=60, batch_size=10)
        await recorder.start()
        for i in range(9):
            recorder.record(make_event(f"r{i}"))
        await asyncio.sleep(0.05)
        assert stored(store) == 0  # below batch size: waits for the interval
        recorder.record(make_event("r9"))
        await wait_until(lambda: stored(store) == 10)
        await recorder.stop()

    asyncio.run(main())


def test_failed_writes_are_kept_and_retried_until_the_store_recovers(
    store: SQLiteStore, make_event: MakeEvent
) -> None:
    flaky = FlakyStore(store)
    flaky.failing = True

    async def main() -> None:
        recorder = UsageRecorder(flaky, flush_interval=0.01, batch_size=3, max_backoff=0.04)
        await recorder.start()
        for i in range(7):
            recorder.record(make_event(f"r{i}"))
        await wait_until(lambda: flaky.attempts >= 4)
        assert recorder.backlog == 7
        assert stored(store) == 0
        flaky.failing = False
        await wait_until(lambda: recorder.backlog == 0)
        assert stored(store) == 7
        await recorder.stop()

    asyncio.run(main())


def test_a_write_that_landed_but_raised_is_counted_once(store: SQLiteStore, make_event: MakeEvent) -> None:
    flaky = FlakyStore(store)
    flaky.fail_after_write = True

    async def main() -> None:
        recorder = UsageRecorder(flaky, flush_interval=0.01, max_backoff=0.02)
        await recorder.start()
        recorder.record(make_event("r1"))
        recorder.record(make_event("r2"))
        await wait_until(lambda: recorder.backlog == 0)
        await recorder.stop()

    asyncio.run(main())
    assert flaky.attempts >= 2
    assert stored(store) == 2


def test_stop_drains_everything(store: SQLiteStore, make_event: MakeEvent) -> None:
    async def main() -> None:
        recorder = UsageRecorder(store, flush_interval=60, batch_size=500)
        await recorder.start()
        await asyncio.sleep(0)
        for i in range(1234):
            recorder.record(make_event(f"r{i}"))
        await recorder.stop()
        assert recorder.backlog == 0

    asyncio.run(main())
    assert stored(store) == 1234


def test_stop_raises_when_the_store_stays_down_and_keeps_the_events(
    store: SQLiteStore, make_event: MakeEvent
) -> None:
    flaky = FlakyStore(store)
    flaky.failing = True

    async def main() -> None:
        recorder = UsageRecorder(flaky, flush_interval=0.01, max_backoff=0.02)
        await recorder.start()
        recorder.record(make_event("r1"))
        with pytest.raises(sqlite3.OperationalError):
            await recorder.stop(retry_for=0.1)
        assert recorder.backlog == 1
        flaky.failing = False
        await recorder.flush()
        assert recorder.backlog == 0

    asyncio.run(main())
    assert store.get_event("r1") is not None


def test_flush_without_a_background_task(store: SQLiteStore, make_event: MakeEvent) -> None:
    flaky = FlakyStore(store)

    async def main() -> None:
        recorder = UsageRecorder(flaky, batch_size=2)
        for i in range(5):
            recorder.record(make_event(f"r{i}"))
        flaky.failing = True
        with pytest.raises(sqlite3.OperationalError):
            await recorder.flush()
        assert recorder.backlog == 5
        flaky.failing = False
        await recorder.flush()
        assert recorder.backlog == 0
        await recorder.flush()  # nothing pending: no write at all
        assert flaky.attempts == 1 + 3

    asyncio.run(main())
    assert stored(store) == 5


def test_concurrent_record_from_many_tasks(store: SQLiteStore, make_event: MakeEvent) -> None:
    async def client(recorder: UsageRecorder, n: int) -> None:
        for i in range(40):
            recorder.record(make_event(f"t{n}-{i}"))
            await asyncio.sleep(0)

    async def main() -> None:
        recorder = UsageRecorder(store, flush_interval=0.01, batch_size=64)
        await recorder.start()
        await asyncio.gather(*(client(recorder, n) for n in range(50)))
        await recorder.stop()

    asyncio.run(main())
    assert stored(store) == 50 * 40


def test_record_from_a_finally_block_of_a_cancelled_task(store: SQLiteStore, make_event: MakeEvent) -> None:
    async def request(recorder: UsageRecorder, started: asyncio.Event) -> None:
        try:
            started.set()
            await asyncio.sleep(3600)
        finally:
            recorder.record(make_event("cancelled", estimated=True))

    async def main() -> None:
        recorder = UsageRecorder(store, flush_interval=60)
        await recorder.start()
        started = asyncio.Event()
        task = asyncio.create_task(request(recorder, started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await recorder.stop()

    asyncio.run(main())
    event = store.get_event("cancelled")
    assert event is not None and event.estimated


def test_record_from_another_thread_wakes_the_writer(store: SQLiteStore, make_event: MakeEvent) -> None:
    async def main() -> None:
        recorder = UsageRecorder(store, flush_interval=60, batch_size=5)
        await recorder.start()

        def produce() -> None:
            for i in range(5):
                recorder.record(make_event(f"r{i}"))

        await asyncio.to_thread(produce)
        await wait_until(lambda: stored(store) == 5)
        await recorder.stop()

    asyncio.run(main())


def test_events_recorded_before_start_are_written(store: SQLiteStore, make_event: MakeEvent) -> None:
    recorder = UsageRecorder(store, flush_interval=0.01)
    recorder.record(make_event("early"))

    async def main() -> None:
        await recorder.start()
        await wait_until(lambda: store.get_event("early") is not None)
        with pytest.raises(RuntimeError):
            await recorder.start()
        await recorder.stop()

    asyncio.run(main())


@pytest.mark.parametrize(("attempt", "low", "high"), [(0, 0.5, 1.0), (1, 1.0, 2.0), (3, 4.0, 8.0), (10, 15.0, 30.0)])
def test_backoff_is_exponential_capped_and_jittered(store: SQLiteStore, attempt: int, low: float,
                                                    high: float) -> None:
    recorder = UsageRecorder(store, flush_interval=1.0, max_backoff=30.0)
    delays = {recorder._backoff(attempt) for _ in range(50)}
    assert all(low <= delay <= high for delay in delays)
    assert len(delays) > 1


@pytest.mark.parametrize(("flush_interval", "batch_size"), [(0, 10), (-1, 10), (1.0, 0)])
def test_rejects_nonsense_settings(store: SQLiteStore, flush_interval: float, batch_size: int) -> None:
    with pytest.raises(ValueError):
        UsageRecorder(store, flush_interval=flush_interval, batch_size=batch_size)
