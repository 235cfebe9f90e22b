from __future__ import annotations

import calendar
import contextlib
import sqlite3
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from metering.events import UsageEvent
from metering.sqlite_store import SQLiteStore
from metering.store import KeyStore, UsageStore, parse_bearer_token

T0 = float(calendar.timegm((2025, 3, 10, 12, 0, 0)))
MIDNIGHT = float(calendar.timegm((2025, 3, 11, 0, 0, 0)))
DAY = 86_400.0

MakeEvent = Callable[..., UsageEvent]


def test_implements_both_protocols(store: SQLiteStore) -> None:
    assert isinstance(store, UsageStore)
    assert isinstance(store, KeyStore)


@pytest.mark.parametrize("first_byte_ms", [None, 42.25])
@pytest.mark.parametrize("flags", [(True, False), (False, True)])
def test_event_round_trips(store: SQLiteStore, make_event: MakeEvent, first_byte_ms: float | None,
                           flags: tuple[bool, bool]) -> None:
    priced, estimated = flags
    event = make_event("req-rt", first_byte_ms=first_byte_ms, priced=priced, estimated=estimated,
                       cache_read_tokens=7, cache_write_tokens=3, status=429, timestamp=T0 + 0.123)
    store.write_events([event])
    assert store.get_event("req-rt") == event
    assert store.get_event("unknown") is None


def test_same_request_id_is_counted_once(store: SQLiteStore, make_event: MakeEvent) -> None:
    first = make_event("dup", cost_micro_usd=100)
    store.write_events([first, make_event("dup", cost_micro_usd=999)])  # within one batch
    store.write_events([first])  # a replayed batch
    store.write_events([make_event("other")])
    [row] = store.usage_summary(0, None, [])
    assert row.requests == 2
    assert store.get_event("dup") == first  # first write wins
    store.write_events([])


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ([], {(): (4, 1111)}),
        (["org"], {("acme",): (3, 111), ("zeta",): (1, 1000)}),
        (["app"], {("chatbot",): (2, 11), ("search",): (2, 1100)}),
        (["model"], {("m-a",): (3, 1011), ("m-b",): (1, 100)}),
        (["operation"], {("Converse",): (3, 1101), ("InvokeModel",): (1, 10)}),
        (["day"], {("2025-03-10",): (3, 111), ("2025-03-11",): (1, 1000)}),
        (["org", "app"], {("acme", "chatbot"): (2, 11), ("acme", "search"): (1, 100),
                          ("zeta", "search"): (1, 1000)}),
        (["day", "org", "model"], {("2025-03-10", "acme", "m-a"): (2, 11),
                                   ("2025-03-10", "acme", "m-b"): (1, 100),
                                   ("2025-03-11", "zeta", "m-a"): (1, 1000)}),
        (["org", "org"], {("acme",): (3, 111), ("zeta",): (1, 1000)}),  # duplicates collapse
    ],
)
def test_summary_groups(store: SQLiteStore, make_event: MakeEvent, by: list[str],
                        expected: dict[tuple[str, ...], tuple[int, int]]) -> None:
    store.write_events([
        make_event("r1", org="acme", app="chatbot", model="m-a", operation="Converse", cost_micro_usd=1),
        make_event("r2", org="acme", app="chatbot", model="m-a", operation="InvokeModel", cost_micro_usd=10),
        make_event("r3", org="acme", app="search", model="m-b", operation="Converse", cost_micro_usd=100),
        make_event("r4", org="zeta", app="search", model="m-a", operation="Converse", cost_micro_usd=1000,
                   timestamp=T0 + DAY),
    ])
    rows = store.usage_summary(0, None, by)
    unique = list(dict.fromkeys(by))
    assert {row.group(unique): (row.requests, row.cost_micro_usd) for row in rows} == expected
    assert [row.group(unique) for row in rows] == sorted(expected)  # sorted by group values
    for row in rows:  # fields not grouped on stay None
        assert all(getattr(row, name) is None for name in {"org", "app", "model", "day", "operation"} - set(by))


def test_summary_sums_every_counter(store: SQLiteStore, make_event: MakeEvent) -> None:
    store.write_events([
        make_event("a", input_tokens=1, output_tokens=2, cache_read_tokens=3, cache_write_tokens=4,
                   cost_micro_usd=5, estimated=True),
        make_event("b", input_tokens=10, output_tokens=20, cache_read_tokens=30, cache_write_tokens=40,
                   cost_micro_usd=0, priced=False),
    ])
    [row] = store.usage_summary(0, None, ["org"])
    assert (row.org, row.requests, row.input_tokens, row.output_tokens, row.cache_read_tokens,
            row.cache_write_tokens, row.cost_micro_usd, row.estimated_requests,
            row.unpriced_requests) == ("acme", 2, 11, 22, 33, 44, 5, 1, 1)
    assert row.total_tokens == 110


@pytest.mark.parametrize(
    ("since", "until", "expected_ids"),
    [
        (MIDNIGHT, None, {"first-of-day", "later"}),  # since is inclusive
        (MIDNIGHT - DAY, MIDNIGHT, {"last-of-day"}),  # until is exclusive
        (MIDNIGHT + 1, None, {"later"}),
        (MIDNIGHT + 2 * DAY, None, set()),
    ],
)
def test_summary_window(store: SQLiteStore, make_event: MakeEvent, since: float, until: float | None,
                        expected_ids: set[str]) -> None:
    events = [make_event("last-of-day", timestamp=MIDNIGHT - 0.001),
              make_event("first-of-day", timestamp=MIDNIGHT),
              make_event("later", timestamp=MIDNIGHT + 3600)]
    store.write_events(events)
    rows = store.usage_summary(since, until, [])
    assert sum(row.requests for row in rows) == len(expected_ids)
    if not expected_ids:
        assert rows == []  # no events: no row at all, not a row of zeros


def test_day_boundary_is_utc(store: SQLiteStore, make_event: MakeEvent) -> None:
    store.write_events([make_event("before", timestamp=MIDNIGHT - 0.001),
                        make_event("at", timestamp=MIDNIGHT)])
    rows = store.usage_summary(0, None, ["day"])
    assert [(row.day, row.requests) for row in rows] == [("2025-03-10", 1), ("2025-03-11", 1)]


@pytest.mark.parametrize("by", [["user"], ["org", "cost_micro_usd"], ["day; DROP TABLE usage_events"], "org"])
def test_summary_rejects_unknown_grouping(store: SQLiteStore, by: list[str] | str) -> None:
    with pytest.raises(ValueError):
        store.usage_summary(0, None, by)


def test_concurrent_writers(store: SQLiteStore, make_event: MakeEvent) -> None:
    def write(worker: int) -> None:
        for batch in range(10):
            store.write_events([make_event(f"w{worker}-{batch}-{i}") for i in range(20)])

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, range(8)))
    [row] = store.usage_summary(0, None, [])
    assert row.requests == 8 * 10 * 20


def test_file_is_private_and_in_wal_mode(tmp_path: Path, make_event: MakeEvent) -> None:
    path = tmp_path / "new.db"
    with SQLiteStore(path) as store:
        store.write_events([make_event()])
        store.create_key("acme", "chatbot")
        wal = Path(f"{path}-wal")
        for file in (path, wal):
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
        with contextlib.closing(sqlite3.connect(path)) as other:
            assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_reopen_keeps_data_and_schema_is_idempotent(tmp_path: Path, make_event: MakeEvent) -> None:
    path = tmp_path / "store.db"
    with SQLiteStore(path) as store:
        store.write_events([make_event("kept")])
        key = store.create_key("acme", "chatbot")
    with SQLiteStore(path) as store:
        assert store.get_event("kept") == make_event("kept")
        assert store.get_key(key.access_key_id) is not None


def test_in_memory_store(make_event: MakeEvent) -> None:
    with SQLiteStore(":memory:") as store:
        store.write_events([make_event()])
        assert store.get_event("req-0") == make_event()


# -- keys -----------------------------------------------------------------


def test_create_key_looks_like_aws(store: SQLiteStore) -> None:
    key = store.create_key("acme", "chatbot")
    assert len(key.access_key_id) == 20
    assert key.access_key_id.startswith("CKIA")
    assert key.access_key_id.isupper() and key.access_key_id.isalnum()
    assert len(key.secret) == 40 and key.secret.isalnum()
    assert (key.org, key.app) == ("acme", "chatbot")
    assert key.secret not in repr(key)
    other = store.create_key("acme", "chatbot")
    assert other.access_key_id != key.access_key_id and other.secret != key.secret


def test_get_list_revoke(tmp_path: Path) -> None:
    now = [1000.0]
    with SQLiteStore(tmp_path / "keys.db", clock=lambda: now[0]) as store:
        first = store.create_key("acme", "chatbot")
        now[0] = 2000.0
        second = store.create_key("zeta", "search")

        record = store.get_key(first.access_key_id)
        assert record is not None
        assert (record.org, record.app, record.secret, record.created_at, record.revoked_at) == (
            "acme", "chatbot", first.secret, 1000.0, None)
        assert record.active and record.secret_matches(first.secret)
        assert not record.secret_matches(second.secret)
        assert first.secret not in repr(record)
        assert store.get_key("CKIA0000000000000000") is None

        now[0] = 3000.0
        assert store.revoke_key(first.access_key_id) is True
        now[0] = 4000.0
        assert store.revoke_key(first.access_key_id) is False  # already revoked: time kept
        assert store.revoke_key("CKIA0000000000000000") is False

        revoked = store.get_key(first.access_key_id)
        assert revoked is not None and not revoked.active and revoked.revoked_at == 3000.0
        assert [(k.access_key_id, k.revoked_at) for k in store.list_keys()] == [
            (first.access_key_id, 3000.0), (second.access_key_id, None)]


@pytest.mark.parametrize(("org", "app"), [("", "chatbot"), ("acme", "")])
def test_create_key_needs_org_and_app(store: SQLiteStore, org: str, app: str) -> None:
    with pytest.raises(ValueError):
        store.create_key(org, app)


def test_bearer_token_round_trip(store: SQLiteStore) -> None:
    key = store.create_key("acme", "chatbot")
    assert key.bearer_token == f"ck-{key.access_key_id}-{key.secret}"
    assert parse_bearer_token(key.bearer_token) == (key.access_key_id, key.secret)


def test_keys_from_many_threads(store: SQLiteStore) -> None:
    barrier = threading.Barrier(8)

    def create(_: int) -> str:
        barrier.wait()
        return store.create_key("acme", "chatbot").access_key_id

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(pool.map(create, range(8)))
    assert ids == {k.access_key_id for k in store.list_keys()} and len(ids) == 8
