"""What only the SQLite store does: per-request rows, exact windows, the file itself.
The shared contract is in test_store_contract.py."""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.events import UsageEvent
from metering.sqlite_store import SQLiteStore
from tests.metering.conftest import _make_event

pytestmark = pytest.mark.anyio

T0 = float(calendar.timegm((2025, 3, 10, 12, 0, 0)))
MIDNIGHT = float(calendar.timegm((2025, 3, 11, 0, 0, 0)))
DAY = 86_400.0

MakeEvent = Callable[..., UsageEvent]


@pytest.mark.parametrize("first_byte_ms", [None, 42.25])
@pytest.mark.parametrize("flags", [(True, False), (False, True)])
async def test_event_round_trips(sqlite_store: SQLiteStore, make_event: MakeEvent, first_byte_ms: float | None,
                                 flags: tuple[bool, bool]) -> None:
    priced, estimated = flags
    event = make_event("req-rt", first_byte_ms=first_byte_ms, priced=priced, estimated=estimated,
                       cache_read_tokens=7, cache_write_tokens=3, status=429, timestamp=T0 + 0.123,
                       quota_scope="acme/chatbot", reserved_pico_usd=99)
    await sqlite_store.write_events([event])
    assert await sqlite_store.get_event("req-rt") == event
    assert await sqlite_store.get_event("unknown") is None


async def test_same_request_id_is_counted_once(sqlite_store: SQLiteStore, make_event: MakeEvent) -> None:
    first = make_event("dup", cost_pico_usd=100, quota_scope="acme")
    await sqlite_store.write_batch("b1", [first, make_event("dup", cost_pico_usd=999, quota_scope="acme")])
    await sqlite_store.write_batch("b2", [first, make_event("other")])  # another batch, the same request
    [row] = await sqlite_store.usage_summary(0, None, [])
    assert (row.requests, row.cost_pico_usd) == (2, 100 + 10**9)
    assert await sqlite_store.get_event("dup") == first  # first write wins
    assert (await sqlite_store.read_budget("acme", "2025-03-10")).model("amazon.nova-pro-v1:0").spent == 100


async def test_a_large_batch_counts_each_new_request_once(sqlite_store: SQLiteStore, make_event: MakeEvent) -> None:
    # More ids than one duplicate check holds (_IDS_PER_QUERY), repeats across its chunks.
    def event(i: int) -> UsageEvent:
        return make_event(f"r{i}", cost_pico_usd=1, quota_scope="acme")

    await sqlite_store.write_batch("b1", [event(i) for i in range(0, 1200, 2)])  # 600 stored before
    await sqlite_store.write_batch("b2", [event(i) for i in range(1200)] + [event(i) for i in range(1, 1200, 3)])
    [row] = await sqlite_store.usage_summary(0, None, [])
    assert row.requests == 1200
    # The quota total counts what was new in each batch: 600 + 600, never a repeat.
    assert (await sqlite_store.read_budget("acme", "2025-03-10")).model("amazon.nova-pro-v1:0").spent == 1200


async def test_summary_by_operation(sqlite_store: SQLiteStore, make_event: MakeEvent) -> None:
    await sqlite_store.write_events([make_event("a", operation="Converse"), make_event("b", operation="InvokeModel"),
                                     make_event("c", operation="Converse")])
    rows = await sqlite_store.usage_summary(0, None, ["operation"])
    assert [(r.operation, r.requests) for r in rows] == [("Converse", 2), ("InvokeModel", 1)]


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        (MIDNIGHT, None, 2),  # since is inclusive
        (MIDNIGHT - DAY, MIDNIGHT, 1),  # until is exclusive
        (MIDNIGHT + 1, None, 1),  # to the second, not the day
        (MIDNIGHT + 2 * DAY, None, 0),
    ],
)
async def test_summary_window_is_exact(sqlite_store: SQLiteStore, make_event: MakeEvent, since: float,
                                       until: float | None, expected: int) -> None:
    await sqlite_store.write_events([make_event("last-of-day", timestamp=MIDNIGHT - 0.001),
                                     make_event("first-of-day", timestamp=MIDNIGHT),
                                     make_event("later", timestamp=MIDNIGHT + 3600)])
    rows = await sqlite_store.usage_summary(since, until, [])
    assert sum(row.requests for row in rows) == expected
    if not expected:
        assert rows == []


@pytest.mark.parametrize("by", [["user"], ["org", "cost_pico_usd"], ["day; DROP TABLE usage_events"], "org"])
async def test_summary_rejects_unknown_grouping(sqlite_store: SQLiteStore, by: list[str] | str) -> None:
    with pytest.raises(ValueError):
        await sqlite_store.usage_summary(0, None, by)


async def test_scope_totals(sqlite_store: SQLiteStore, make_event: MakeEvent) -> None:
    await sqlite_store.write_events([
        make_event("a", app="chatbot", model="m-a", cost_pico_usd=1),
        make_event("b", app="search", model="m-a", cost_pico_usd=10),
        make_event("c", app="search", model="m-b", cost_pico_usd=100),
        make_event("d", org="zeta", model="m-a", cost_pico_usd=1000),
    ])
    org = await sqlite_store.scope_totals("acme", "2025-03-10")
    assert {model: row.cost_pico_usd for model, row in org.items()} == {"m-a": 11, "m-b": 100}
    app = await sqlite_store.scope_totals("acme/search", "2025-03-10")
    assert {model: row.requests for model, row in app.items()} == {"m-a": 1, "m-b": 1}


async def test_file_is_private_and_in_wal_mode(tmp_path: Path, make_event: MakeEvent) -> None:
    path = tmp_path / "new.db"
    async with SQLiteStore(path) as store:
        await store.write_events([make_event()])
        await store.create_key("acme", "chatbot")
        for file in (path, Path(f"{path}-wal")):
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
        with contextlib.closing(sqlite3.connect(path)) as other:
            assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_reopen_keeps_data_and_schema_is_idempotent(tmp_path: Path, make_event: MakeEvent) -> None:
    path = tmp_path / "store.db"
    async with SQLiteStore(path) as store:
        await store.write_events([make_event("kept")])
        key = await store.create_key("acme", "chatbot")
    async with SQLiteStore(path) as store:
        assert await store.get_event("kept") == make_event("kept")
        assert await store.get_key(key.access_key_id) is not None
        assert "ready" in await store.init()


async def test_a_file_of_the_previous_version_gains_the_new_columns(tmp_path: Path, make_event: MakeEvent) -> None:
    """A store written before quota scopes existed opens, keeps its rows and takes new ones."""
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as old:
        old.executescript("""
            CREATE TABLE usage_events (request_id TEXT PRIMARY KEY, ts REAL NOT NULL, day TEXT NOT NULL,
              org TEXT NOT NULL, app TEXT NOT NULL, operation TEXT NOT NULL, requested_model TEXT NOT NULL,
              model TEXT NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
              cache_read_tokens INTEGER NOT NULL, cache_write_tokens INTEGER NOT NULL,
              cost_micro_usd INTEGER NOT NULL, priced INTEGER NOT NULL, latency_ms REAL NOT NULL,
              first_byte_ms REAL, status INTEGER NOT NULL, estimated INTEGER NOT NULL);
            INSERT INTO usage_events VALUES ('old', 1741608000.0, '2025-03-10', 'acme', 'chatbot', 'Converse',
              'premium', 'amazon.nova-pro-v1:0', 100, 50, 0, 0, 1000, 1, 120.5, NULL, 200, 0);
        """)
    async with SQLiteStore(path) as store:
        assert await store.get_event("old") == make_event("old")
        await store.write_events([make_event("new", quota_scope="acme", reserved_pico_usd=5)])
        assert (await store.get_event("new")) == make_event("new", quota_scope="acme", reserved_pico_usd=5)


async def test_exhaustion_marks_of_the_previous_version_keep_no_time(tmp_path: Path) -> None:
    """A file whose sticky fallback state predates its time opens; its marks have no time."""
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as old:
        old.executescript("""
            CREATE TABLE quota_exhausted (scope TEXT NOT NULL, day TEXT NOT NULL, model TEXT NOT NULL,
              PRIMARY KEY (scope, day, model));
            INSERT INTO quota_exhausted VALUES ('acme', '2025-03-10', 'm-a');
        """)
    async with SQLiteStore(path) as store:
        assert await store.exhaustion_times("acme", "2025-03-10") == {"m-a": None}
        await store.mark_exhausted("acme", "2025-03-10", "m-b")
        times = await store.exhaustion_times("acme", "2025-03-10")
        assert times["m-a"] is None and isinstance(times["m-b"], float)
        assert await store.exhausted_models("acme", "2025-03-10") == {"m-a", "m-b"}


async def test_in_memory_store(make_event: MakeEvent) -> None:
    async with SQLiteStore(":memory:") as store:
        await store.write_events([make_event()])
        assert await store.get_event("req-0") == make_event()


async def test_get_list_revoke_times(tmp_path: Path) -> None:
    now = [1000.0]
    async with SQLiteStore(tmp_path / "keys.db", clock=lambda: now[0]) as store:
        first = await store.create_key("acme", "chatbot")
        now[0] = 2000.0
        second = await store.create_key("zeta", "search")
        record = await store.get_key(first.access_key_id)
        assert record is not None
        assert (record.secret, record.created_at, record.revoked_at) == (first.secret, 1000.0, None)
        assert first.secret not in repr(record)
        now[0] = 3000.0
        assert await store.revoke_key(first.access_key_id) is True
        now[0] = 4000.0
        assert await store.revoke_key(first.access_key_id) is False  # already revoked: time kept
        assert [(k.access_key_id, k.revoked_at) for k in await store.list_keys()] == [
            (first.access_key_id, 3000.0), (second.access_key_id, None)]


async def test_keys_from_many_tasks(sqlite_store: SQLiteStore) -> None:
    ids = {key.access_key_id for key in await asyncio.gather(*(sqlite_store.create_key("acme", "c") for _ in range(8)))}
    assert ids == {k.access_key_id for k in await sqlite_store.list_keys()} and len(ids) == 8


def test_the_store_is_usable_from_sync_code_through_asyncio_run(tmp_path: Path, make_event: MakeEvent) -> None:
    """The CLI and the e2e helpers do exactly this."""
    with SQLiteStore(tmp_path / "sync.db") as store:
        asyncio.run(store.write_events([make_event("s")]))
        assert asyncio.run(store.get_event("s")) == make_event("s")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 7), st.integers(1, 9)), max_size=12), max_size=5))
def test_each_request_counts_once_whatever_the_batches_repeat(batches: list[list[tuple[int, int]]]) -> None:
    """A batch inserted whole when no id repeats, or undone and sent again without the
    repeats (`_insert_fresh`): either way each request id counts once, at its first cost."""
    first: dict[str, int] = {}
    with SQLiteStore(":memory:") as store:
        for number, batch in enumerate(batches):
            events = [_make_event(f"r{i}", cost_pico_usd=cost, quota_scope="acme") for i, cost in batch]
            for event in events:
                first.setdefault(event.request_id, event.cost_pico_usd)
            assert asyncio.run(store.write_batch(f"b{number}", events))
        rows = asyncio.run(store.usage_summary(0, None, []))
        spent = asyncio.run(store.read_budget("acme", "2025-03-10")).model("amazon.nova-pro-v1:0").spent
        for request_id, cost in first.items():
            stored = asyncio.run(store.get_event(request_id))
            assert stored is not None and stored.cost_pico_usd == cost
    assert [(row.requests, row.cost_pico_usd) for row in rows] == ([(len(first), sum(first.values()))] if first else [])
    assert spent == sum(first.values())


class _Rows:
    """A store listener that keeps the rows each transaction changed."""

    def __init__(self) -> None:
        self.changed: list[int] = []

    def on_call(self, operation: str, items: int) -> None:
        if operation == "Transaction":
            self.changed.append(items)

    def on_flush(self, seconds: float, events: int) -> None:
        pass


async def test_a_batch_sent_again_without_its_repeats_reports_only_the_rows_it_kept(make_event: MakeEvent) -> None:
    """The rows a savepoint undid (`_insert_fresh`) are not counted as changed."""
    changed = []
    for second in (["a", "b"], ["b"]):
        with SQLiteStore(":memory:") as store:
            rows = _Rows()
            store.stats.listen(rows)
            await store.write_batch("b1", [make_event("a", quota_scope="acme")])
            await store.write_batch("b2", [make_event(request_id, quota_scope="acme") for request_id in second])
            changed.append(rows.changed[1])
    assert changed[0] == changed[1]
