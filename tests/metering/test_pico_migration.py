"""Upgrading to pico-USD (issue #16): what was written in micro-USD reads at its true value.

Each store is given data exactly as the previous version wrote it — an SQLite file
with its schema, DynamoDB items with their attribute names, journal lines with
their fields — and the new code must read every amount ×10⁶, once, and keep
counting on top of it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from metering.dynamodb_store import DynamoDBStore
from metering.events import UsageEvent
from metering.recorder import UsageRecorder
from metering.sqlite_leases import LEASES_SCHEMA
from metering.sqlite_store import _SCHEMA, SQLiteStore
from metering.store import Store, StoreError
from tests.metering.budget_memory import committed_spend, reserve

pytestmark = pytest.mark.anyio

MakeEvent = Callable[..., UsageEvent]
DAY = "2025-03-10"
MODEL = "amazon.nova-pro-v1:0"
MICRO = 10**6

#: The last SQLite schema in micro-USD (the tables that hold money; the others did not change).
_OLD_SQLITE = """
CREATE TABLE usage_events (
    day TEXT NOT NULL, request_id TEXT NOT NULL PRIMARY KEY, ts REAL NOT NULL, org TEXT NOT NULL,
    app TEXT NOT NULL, operation TEXT NOT NULL, requested_model TEXT NOT NULL, model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL, cost_micro_usd INTEGER NOT NULL, priced INTEGER NOT NULL,
    latency_ms REAL NOT NULL, first_byte_ms REAL, status INTEGER NOT NULL, estimated INTEGER NOT NULL,
    quota_scope TEXT NOT NULL DEFAULT '', reserved_micro_usd INTEGER NOT NULL DEFAULT 0,
    cached INTEGER NOT NULL DEFAULT 0);
CREATE TABLE quota_committed (scope TEXT NOT NULL, day TEXT NOT NULL, model TEXT NOT NULL,
    committed INTEGER NOT NULL, PRIMARY KEY (scope, day, model));
INSERT INTO usage_events VALUES
    ('2025-03-10', 'old-1', 1741608000.0, 'acme', 'chatbot', 'Converse', 'premium', 'amazon.nova-pro-v1:0',
     100, 50, 0, 0, 1000, 1, 120.5, NULL, 200, 0, 'acme', 0, 0),
    ('2025-03-10', 'old-2', 1741608001.0, 'acme', 'chatbot', 'Converse', 'premium', 'amazon.nova-pro-v1:0',
     100, 50, 0, 0, 1, 1, 120.5, NULL, 200, 0, 'acme', 7, 0);
INSERT INTO quota_committed VALUES ('acme', '2025-03-10', 'amazon.nova-pro-v1:0', 994);
"""


def _old_sqlite(path: Path, extra: str = "") -> None:
    with contextlib.closing(sqlite3.connect(path)) as old:
        old.execute("PRAGMA journal_mode=WAL")  # as the previous version left its files
        old.executescript(_OLD_SQLITE + extra)
        old.executescript(_SCHEMA + LEASES_SCHEMA)  # the tables that did not change (the two above exist)


async def test_an_sqlite_file_in_micro_usd_is_converted_once(tmp_path: Path, make_event: MakeEvent) -> None:
    path = tmp_path / "old.db"
    _old_sqlite(path)
    async with SQLiteStore(path) as store:
        assert store.converted is not None and "cost_micro_usd → cost_pico_usd" in store.converted
        assert "converted money from micro-USD to pico-USD" in await store.init()
        assert await store.get_event("old-1") == make_event("old-1", quota_scope="acme")  # $0.001
        assert (await store.get_event("old-2")) == make_event("old-2", timestamp=1741608001.0, quota_scope="acme",
                                                               cost_pico_usd=MICRO, reserved_pico_usd=7 * MICRO)
        assert await committed_spend(store, "acme", DAY) == {MODEL: 994 * MICRO}
        await store.write_events([make_event("new", quota_scope="acme", cost_pico_usd=480_000)])
        [row] = await store.usage_summary(0, None, ["model"])
        assert (row.requests, row.cost_pico_usd) == (3, 1001 * MICRO + 480_000)
        assert await committed_spend(store, "acme", DAY) == {MODEL: 994 * MICRO + 480_000}
        # The quota sees the converted spend: 994 µ$ + 0.48 µ$ committed, 6 µ$ left of a 1000 µ$ quota.
        assert not await reserve(store, "acme", DAY, MODEL, 6 * MICRO, 1000 * MICRO)
        assert await reserve(store, "acme", DAY, MODEL, 5 * MICRO, 1000 * MICRO)
    async with SQLiteStore(path) as again:  # the column names say it is done: never ×10⁶ twice
        assert again.converted is None and "converted" not in await again.init()
        [row] = await again.usage_summary(0, None, [])
        assert row.cost_pico_usd == 1001 * MICRO + 480_000
    with contextlib.closing(sqlite3.connect(path)) as raw:
        columns = {row[1] for row in raw.execute("PRAGMA table_info(usage_events)")}
        assert {"cost_pico_usd", "reserved_pico_usd"} <= columns and not {c for c in columns if "micro" in c}


def test_a_file_two_processes_open_at_once_is_converted_once(tmp_path: Path) -> None:
    """Another process (a worker, the CLI) converts the file while this one opens it:
    this one waits for the write lock — longer than the store's usual 5 s, as a large
    file takes — looks again and converts nothing."""
    path = tmp_path / "old.db"
    _old_sqlite(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with ThreadPoolExecutor(1) as pool:
        opening = pool.submit(SQLiteStore, path)
        time.sleep(5.5)  # it has read the old column names and waits for the lock
        assert not opening.done()
        for table, old, new in (("usage_events", "cost_micro_usd", "cost_pico_usd"),
                                ("usage_events", "reserved_micro_usd", "reserved_pico_usd"),
                                ("quota_committed", "committed", "committed_pico_usd")):
            other.execute(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}")
            other.execute(f"UPDATE {table} SET {new} = {new} * 1000000")
        other.execute("COMMIT")
        other.close()
        with opening.result(timeout=10) as store:
            assert store.converted is None
            assert store._conn.execute("SELECT SUM(cost_pico_usd) FROM usage_events").fetchone() == (1001 * MICRO,)
            assert store._conn.execute("PRAGMA busy_timeout").fetchone() == (5000,)


async def test_an_sqlite_file_that_cannot_be_converted_is_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "huge.db"
    _old_sqlite(path, "INSERT INTO quota_committed VALUES ('big', '2025-03-10', 'm', 9300000000000);")
    with pytest.raises(StoreError, match="quota_committed.committed: 1 value"):
        SQLiteStore(path)
    with contextlib.closing(sqlite3.connect(path)) as raw:  # one transaction: nothing renamed, nothing ×10⁶
        assert raw.execute("SELECT SUM(cost_micro_usd) FROM usage_events").fetchone() == (1001,)
        assert raw.execute("SELECT committed FROM quota_committed WHERE scope = 'acme'").fetchone() == (994,)


async def test_sqlite_sums_past_64_bits_stay_exact(tmp_path: Path, make_event: MakeEvent) -> None:
    """Each row fits SQLite's 64-bit integers ($9.2M); their sum over a window need not."""
    async with SQLiteStore(tmp_path / "big.db") as store:
        near_max = 2**63 - 1
        await store.write_events([make_event(f"r{i}", cost_pico_usd=near_max) for i in range(3)])
        [row] = await store.usage_summary(0, None, ["org"])
        assert row.cost_pico_usd == 3 * near_max


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


async def _put_old_items(store: DynamoDBStore) -> None:
    """Items as the previous version wrote them: `cost_micro_usd` and `committed#<model>`."""
    counters = {"requests": _n(2), "input_tokens": _n(200), "output_tokens": _n(100), "cost_micro_usd": _n(1001)}
    items: list[dict[str, Any]] = [
        {"pk": {"S": f"USAGE#{DAY}#00"}, "sk": {"S": f"acme#chatbot#{MODEL}"}, "org": {"S": "acme"},
         "app": {"S": "chatbot"}, "model": {"S": MODEL}, "day": {"S": DAY}, **counters},
        {"pk": {"S": "DAYS"}, "sk": {"S": DAY[:4]}, "days": {"SS": [DAY]}},
        {"pk": {"S": f"TOTAL#{DAY}"}, "sk": {"S": "acme"}, "scope": {"S": "acme"}, "day": {"S": DAY},
         "models": {"M": {MODEL: {"M": counters}}}},
        {"pk": {"S": "QUOTA#acme"}, "sk": {"S": DAY}, "committed#" + MODEL: _n(994)},
    ]
    for item in items:
        await store._api().put_item(TableName=store.table, Item=item)


async def test_dynamodb_items_in_micro_usd_read_at_their_true_value(dynamodb_factory: Callable[..., DynamoDBStore],
                                                                     make_event: MakeEvent) -> None:
    async with dynamodb_factory(shards=1) as store:
        await store.init()
        await _put_old_items(store)
        [row] = await store.usage_summary(0, None, ["model"])
        assert (row.requests, row.cost_pico_usd) == (2, 1001 * MICRO)
        assert (await store.scope_totals("acme", DAY))[MODEL].cost_pico_usd == 1001 * MICRO
        assert await committed_spend(store, "acme", DAY) == {MODEL: 994 * MICRO}
        # New usage adds to the same items under the new names; both count.
        await store.write_events([make_event("new", quota_scope="acme", cost_pico_usd=480_000)])
        [row] = await store.usage_summary(0, None, ["model"])
        assert (row.requests, row.cost_pico_usd) == (3, 1001 * MICRO + 480_000)
        committed = 994 * MICRO + 480_000
        assert await committed_spend(store, "acme", DAY) == {MODEL: committed}
        await store.consolidate(DAY)  # rewrites TOTAL in pico-USD
        assert (await store.scope_totals("acme", DAY))[MODEL].cost_pico_usd == 1001 * MICRO + 480_000


async def test_a_dynamodb_reservation_sees_the_micro_usd_spend(dynamodb_factory: Callable[..., DynamoDBStore],
                                                                make_event: MakeEvent) -> None:
    """The condition of a lease claim reads one attribute: the old one is folded into it first,
    also when a replica of the previous version adds to it again during the upgrade."""
    async with dynamodb_factory() as store:
        await store.init()
        await _put_old_items(store)
        quota = 1000 * MICRO
        assert not await reserve(store, "acme", DAY, MODEL, 6 * MICRO + 1, quota)  # 994 µ$ spent
        assert await reserve(store, "acme", DAY, MODEL, 6 * MICRO, quota)
        assert not await reserve(store, "acme", DAY, MODEL, 1, quota)
        quota_item = (await store._api().get_item(TableName=store.table, Key={"pk": {"S": "QUOTA#acme"},
                                                                              "sk": {"S": DAY}}))["Item"]
        assert f"committed#{MODEL}" not in quota_item
        assert quota_item[f"committed_pico_usd#{MODEL}"] == _n(quota)
        await store._api().update_item(  # an old replica, still running, commits 3 µ$
            TableName=store.table, Key={"pk": {"S": "QUOTA#acme"}, "sk": {"S": DAY}},
            UpdateExpression="ADD #c :v", ExpressionAttributeNames={"#c": f"committed#{MODEL}"},
            ExpressionAttributeValues={":v": _n(3)})
        assert await committed_spend(store, "acme", DAY) == {MODEL: quota + 3 * MICRO}
        assert not await reserve(store, "acme", DAY, MODEL, 1, quota + 3 * MICRO)
        assert await reserve(store, "acme", DAY, MODEL, 1, quota + 3 * MICRO + 1)
        assert await store.renew_lease("acme", DAY, MODEL, "test-holder", 1, None)  # given back
        assert await committed_spend(store, "acme", DAY) == {MODEL: quota + 3 * MICRO}


async def test_a_journal_written_in_micro_usd_replays_in_pico_usd(store: Store, make_event: MakeEvent,
                                                                   tmp_path: Path) -> None:
    """The previous version crashed (or was stopped with the store down) leaving its
    journal; the new version replays it at the lines' true value."""
    journal = tmp_path / "journal"
    lines = []
    for i in range(3):
        record = make_event(f"old{i}", quota_scope="acme").to_record()
        del record["cost_pico_usd"], record["reserved_pico_usd"]
        lines.append(json.dumps({**record, "cost_micro_usd": 1001, "reserved_micro_usd": 1}))
    journal.mkdir(mode=0o700)
    (journal / "journal-id").write_text("0123456789abcdef")
    (journal / "segment-000000000001.jsonl").write_text("\n".join(lines) + "\n")

    recorder = UsageRecorder(store, journal, flush_interval=60)
    await recorder.start()
    assert recorder.backlog == 3
    await recorder.flush()
    [row] = await store.usage_summary(0, None, [])
    assert (row.requests, row.cost_pico_usd) == (3, 3 * 1001 * MICRO)
    assert await committed_spend(store, "acme", DAY) == {MODEL: 3 * 1000 * MICRO}
    await recorder.stop()
