"""The metering pipeline (journal → aggregate → flush) against real stores.

Crashes are simulated in-process by abandoning a recorder without `stop()`:
its tasks are cancelled and its journal files closed, as the kernel does for a
killed process; the real SIGKILL test is in test_crash_recovery.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from metering.events import UsageEvent
from metering.journal import JournalBusy, JournalError
from metering.recorder import UsageRecorder
from metering.store import Store

pytestmark = pytest.mark.anyio

MakeEvent = Callable[..., UsageEvent]
DAY = "2025-03-10"
MODEL = "amazon.nova-pro-v1:0"


class FlakyStore:
    """A real store whose batch writes fail on demand.

    `fail_after_write` lets a write land and *then* raises, as a timeout after
    a commit would: the retry must not count it twice.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.failing = False
        self.fail_after_write = 0
        self.attempts = 0

    async def write_batch(self, batch_id: str, events: Sequence[UsageEvent]) -> bool:
        self.attempts += 1
        if self.failing:
            raise ConnectionError("store unreachable")
        applied = await self.inner.write_batch(batch_id, events)
        if self.fail_after_write:
            self.fail_after_write -= 1
            raise TimeoutError("write landed, acknowledgement lost")
        return applied

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def stored(store: Store) -> tuple[int, int]:
    rows = await store.usage_summary(0, None, [])
    return sum(row.requests for row in rows), sum(row.cost_pico_usd for row in rows)


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > within:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.01)
    return loop.time() - start


async def crash(recorder: UsageRecorder) -> None:
    """What SIGKILL leaves: no drain, no clean-up; the kernel closes the files."""
    for task in recorder._tasks:
        task.cancel()
    await asyncio.gather(*recorder._tasks, return_exceptions=True)
    recorder._tasks = []
    recorder._journal.close()


def journal_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(("segment-", "batch-")))


async def test_events_reach_the_store_within_the_flush_interval(store: Store, make_event: MakeEvent,
                                                                tmp_path: Path) -> None:
    recorder = UsageRecorder(store, tmp_path / "journal", flush_interval=0.05)
    await recorder.start()
    recorder.record(make_event("r1", cost_pico_usd=3))
    assert recorder.backlog == 1
    await wait_until(lambda: recorder.backlog == 0)
    assert await stored(store) == (1, 3)
    assert recorder.healthy
    await recorder.stop()
    assert journal_files(tmp_path / "journal") == []  # flushed segments are deleted


async def test_many_tasks_exact_totals(store: Store, make_event: MakeEvent, tmp_path: Path) -> None:
    """2,000 events from 50 concurrent tasks, flushed while they arrive."""
    recorder = UsageRecorder(store, tmp_path / "journal", flush_interval=0.05)
    await recorder.start()

    async def client(n: int) -> None:
        for i in range(40):
            recorder.record(make_event(f"t{n}-{i}", org=("acme", "zeta")[n % 2], cost_pico_usd=i,
                                       quota_scope=("acme", "zeta")[n % 2]))
            await asyncio.sleep(0)

    await asyncio.gather(*(client(n) for n in range(50)))
    await recorder.stop()
    assert recorder.backlog == 0
    assert await stored(store) == (2000, 50 * sum(range(40)))
    assert (await store.read_budget("acme", DAY)).model(MODEL).spent == 25 * sum(range(40))


async def test_a_flush_writes_one_counter_per_key_not_one_per_request(
    dynamodb_store: Any, make_event: MakeEvent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transactions: list[list[dict[str, Any]]] = []
    client = dynamodb_store._client
    real = client.transact_write_items

    async def counting(**kwargs: Any) -> Any:
        transactions.append(kwargs["TransactItems"])
        return await real(**kwargs)

    monkeypatch.setattr(client, "transact_write_items", counting)
    recorder = UsageRecorder(dynamodb_store, tmp_path / "journal", flush_interval=60)
    await recorder.start()
    for i in range(500):  # two (org, app, model, day) keys, one minute, one quota scope
        recorder.record(make_event(f"r{i}", app=("a", "b")[i % 2], quota_scope="acme"))
    await recorder.flush()
    [items] = transactions
    kinds = sorted(item.get("Update", item.get("Put"))["Key" if "Update" in item else "Item"]["pk"]["S"].split("#")[0]
                   for item in items)
    assert kinds == ["BATCH", "METRICS", "QUOTA", "USAGE", "USAGE"]
    assert (await stored(dynamodb_store))[0] == 500
    await recorder.stop()


async def test_stored_settlements_are_told_after_the_flush(store: Store, make_event: MakeEvent,
                                                             tmp_path: Path) -> None:
    """`on_stored` hears what each stored batch settled of each budget lease, only once stored."""
    heard: list[dict[tuple[str, str, str, str], int]] = []
    recorder = UsageRecorder(store, tmp_path / "journal", flush_interval=60, on_stored=lambda s: heard.append(dict(s)))
    await recorder.start()
    recorder.record(make_event("a", quota_scope="acme", cost_pico_usd=100, reserved_pico_usd=30, lease="h1"))
    recorder.record(make_event("b", quota_scope="acme", cost_pico_usd=5, reserved_pico_usd=5, lease="h1"))
    recorder.record(make_event("c", quota_scope="acme", cost_pico_usd=7))  # served unchecked: no lease
    recorder.record(make_event("d", quota_scope="", cost_pico_usd=1000))
    assert heard == []
    await recorder.flush()
    assert heard == [{("acme", DAY, MODEL, "h1"): 35}]
    budget = (await store.read_budget("acme", DAY)).model(MODEL)
    assert (budget.committed, budget.spent, budget.leases["h1"].amount) == (77, 112, -35)
    await recorder.stop()


async def test_store_outage_backlog_grows_then_drains(store: Store, make_event: MakeEvent, tmp_path: Path) -> None:
    flaky = FlakyStore(store)
    flaky.failing = True
    recorder = UsageRecorder(flaky, tmp_path / "journal", flush_interval=0.02, retry_base=0.01, max_backoff=0.05)
    await recorder.start()
    for i in range(30):
        recorder.record(make_event(f"r{i}", quota_scope="acme", cost_pico_usd=2))
        await asyncio.sleep(0.005)
    await wait_until(lambda: flaky.attempts >= 3)
    assert recorder.backlog == 30 and not recorder.healthy
    assert await stored(store) == (0, 0)
    flaky.failing = False
    await wait_until(lambda: recorder.backlog == 0 and recorder.healthy)
    assert await stored(store) == (30, 60)
    await recorder.stop()


async def test_a_write_that_landed_but_raised_is_counted_once(store: Store, make_event: MakeEvent,
                                                              tmp_path: Path) -> None:
    flaky = FlakyStore(store)
    flaky.fail_after_write = 2
    recorder = UsageRecorder(flaky, tmp_path / "journal", flush_interval=0.02, retry_base=0.01)
    await recorder.start()
    recorder.record(make_event("r1", quota_scope="acme", cost_pico_usd=7))
    recorder.record(make_event("r2", quota_scope="acme", cost_pico_usd=7))
    await wait_until(lambda: recorder.backlog == 0)
    await recorder.stop()
    assert flaky.attempts >= 3
    assert await stored(store) == (2, 14)
    assert (await store.read_budget("acme", DAY)).model(MODEL).spent == 14


async def test_crash_before_any_flush_loses_nothing(store: Store, make_event: MakeEvent, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    first = UsageRecorder(store, journal, flush_interval=60)
    await first.start()
    for i in range(10):
        first.record(make_event(f"a{i}"))
    await first.flush()  # ten stored
    for i in range(7):
        first.record(make_event(f"b{i}"))  # seven only in the journal
    await crash(first)

    second = UsageRecorder(store, journal, flush_interval=60)
    await second.start()
    assert second.backlog == 7
    await second.flush()
    assert await stored(store) == (17, 17 * 10**9)
    await second.stop()


async def test_crash_after_the_store_write_counts_it_once(store: Store, make_event: MakeEvent,
                                                          tmp_path: Path) -> None:
    """The batch landed, the process died before deleting its segments: the
    replay sends the same batch id and the store refuses it."""
    journal = tmp_path / "journal"
    flaky = FlakyStore(store)
    flaky.fail_after_write = 1
    first = UsageRecorder(flaky, journal, flush_interval=60)
    await first.start()
    for i in range(5):
        first.record(make_event(f"r{i}", quota_scope="acme", cost_pico_usd=10))
    with pytest.raises(TimeoutError):
        await first.flush()
    assert await stored(store) == (5, 50)
    assert any(name.endswith(".intent") for name in journal_files(journal))
    await crash(first)

    second = UsageRecorder(store, journal, flush_interval=60)
    await second.start()
    assert second.backlog == 5
    await second.flush()
    assert second.backlog == 0
    assert await stored(store) == (5, 50)
    assert (await store.read_budget("acme", DAY)).model(MODEL).spent == 50
    await second.stop()
    assert journal_files(journal) == []


async def test_stop_with_the_store_down_keeps_the_backlog_for_the_next_start(
    store: Store, make_event: MakeEvent, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    flaky = FlakyStore(store)
    flaky.failing = True
    first = UsageRecorder(flaky, journal, flush_interval=0.02, retry_base=0.01)
    await first.start()
    for i in range(4):
        first.record(make_event(f"r{i}"))
    await first.stop(drain_for=0.2)  # never raises
    assert first.backlog == 4

    second = UsageRecorder(store, journal, flush_interval=60)
    await second.start()
    await second.stop()
    assert await stored(store) == (4, 4 * 10**9)


async def test_events_recorded_before_start_are_journaled_at_start(sqlite_store: Store, make_event: MakeEvent,
                                                                   tmp_path: Path) -> None:
    recorder = UsageRecorder(sqlite_store, tmp_path / "journal", flush_interval=60)
    recorder.record(make_event("early"))
    assert recorder.backlog == 1
    await recorder.start()
    await recorder.stop()
    assert await stored(sqlite_store) == (1, 10**9)


async def test_a_failing_journal_keeps_events_in_memory_and_recovers(
    sqlite_store: Store, make_event: MakeEvent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = UsageRecorder(sqlite_store, tmp_path / "journal", flush_interval=60, fsync_interval=0.01)
    await recorder.start()
    journal = recorder._journal
    real_append = journal.append

    def full_disk(line: bytes) -> None:
        raise JournalError("No space left on device")

    monkeypatch.setattr(journal, "append", full_disk)
    recorder.record(make_event("a"))  # does not raise
    recorder.record(make_event("b"))
    assert recorder.backlog == 2 and not recorder.healthy
    monkeypatch.setattr(journal, "append", real_append)
    await wait_until(lambda: recorder.healthy)
    await recorder.flush()
    assert await stored(sqlite_store) == (2, 2 * 10**9)
    await recorder.stop()


async def test_one_recorder_per_journal(sqlite_store: Store, tmp_path: Path) -> None:
    first = UsageRecorder(sqlite_store, tmp_path / "journal")
    await first.start()
    with pytest.raises(JournalBusy):
        await UsageRecorder(sqlite_store, tmp_path / "journal").start()
    await first.stop()


async def test_a_backlog_drains_in_batches(sqlite_store: Store, make_event: MakeEvent, tmp_path: Path) -> None:
    batches: list[int] = []
    real = sqlite_store.write_batch

    class Counting(FlakyStore):
        async def write_batch(self, batch_id: str, events: Sequence[UsageEvent]) -> bool:
            batches.append(len(events))
            return await real(batch_id, events)

    recorder = UsageRecorder(Counting(sqlite_store), tmp_path / "journal", flush_interval=60, batch_size=10)
    await recorder.start()
    for round_ in range(5):
        for i in range(4):
            recorder.record(make_event(f"r{round_}-{i}"))
        await recorder._rotate()  # five sealed segments of four events
    await recorder.flush()
    assert batches == [8, 8, 4]  # whole segments, at most batch_size events
    await recorder.stop()


async def test_a_flush_sends_the_events_it_recorded_without_reading_its_journal_back(
    store: Store, make_event: MakeEvent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = UsageRecorder(store, tmp_path / "journal", flush_interval=0.02)
    await recorder.start()
    reads: list[int] = []
    read_segment = recorder._journal.read_segment  # noqa: SLF001 — counted, not changed
    monkeypatch.setattr(recorder._journal, "read_segment",  # noqa: SLF001
                        lambda number: reads.append(number) or read_segment(number))
    for i in range(20):
        recorder.record(make_event(f"r{i}", cost_pico_usd=3))
    await wait_until(lambda: recorder.backlog == 0)
    assert await stored(store) == (20, 60) and reads == []
    assert recorder._kept == {} and recorder._kept_count == 0  # noqa: SLF001 — nothing held after the flush
    await recorder.stop()


async def test_past_the_memory_bound_sealed_segments_are_read_from_the_journal(
    store: Store, make_event: MakeEvent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("metering.recorder._KEPT_EVENTS", 5)
    flaky = FlakyStore(store)
    flaky.failing = True  # an outage: segments pile up past what is kept in memory
    recorder = UsageRecorder(flaky, tmp_path / "journal", flush_interval=0.02, retry_base=0.01, max_backoff=0.05)
    await recorder.start()
    for i in range(30):
        recorder.record(make_event(f"r{i}", cost_pico_usd=2))
        await asyncio.sleep(0.005)
    await wait_until(lambda: flaky.attempts >= 3)
    assert recorder._kept_count <= 5  # noqa: SLF001
    flaky.failing = False
    await wait_until(lambda: recorder.backlog == 0)
    assert await stored(store) == (30, 60)  # every event once, kept or read back
    assert recorder._kept_count == 0  # noqa: SLF001
    await recorder.stop()
