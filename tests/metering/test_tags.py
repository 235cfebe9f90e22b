"""Cost attribution tags in both stores: counted per value, grouped by `tag:<key>`,
and bounded — per (org, key, UTC day) at most `max_tag_values` values, the rest `other`."""

from __future__ import annotations

import calendar
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering.dynamodb_store import DynamoDBStore
from metering.events import UsageEvent
from metering.journal import encode
from metering.sqlite_store import SQLiteStore
from metering.sqlite_tags import TAGS_SCHEMA, store_tags
from metering.store import Store, normalize_group_by
from metering.tags import MAX_VALUE_CHARS, OTHER, TagValueCache, clean_value, make_tags
from tests.metering.conftest import _make_event

pytestmark = pytest.mark.anyio

MakeEvent = Callable[..., UsageEvent]
T0 = float(calendar.timegm((2025, 3, 10, 12, 0, 0)))


def tagged(make_event: MakeEvent, request_id: str, **tags: str) -> UsageEvent:
    return make_event(request_id, tags=make_tags(tags))


async def by_tag(store: Store, *groups: str) -> dict[tuple[str | None, ...], tuple[int, int]]:
    rows = await store.usage_summary(0, None, list(groups))
    return {row.group(normalize_group_by(groups)): (row.requests, row.cost_pico_usd) for row in rows}


async def test_usage_groups_by_a_tag_with_untagged_usage_apart(store: Store, make_event: MakeEvent) -> None:
    await store.write_events([
        tagged(make_event, "a", project="apollo", job="j1"),
        tagged(make_event, "b", project="apollo"),
        tagged(make_event, "c", project="gemini", job="j1"),
        make_event("d"),
        tagged(make_event, "e", job="j2", ignored="x"),
    ])
    cost = 1_000_000_000
    assert await by_tag(store, "tag:project") == {
        ("apollo",): (2, 2 * cost), ("gemini",): (1, cost), (None,): (2, 2 * cost)}
    assert await by_tag(store, "org", "app", "tag:job") == {
        ("acme", "chatbot", "j1"): (2, 2 * cost), ("acme", "chatbot", "j2"): (1, cost),
        ("acme", "chatbot", None): (2, 2 * cost)}
    assert await by_tag(store, "tag:ignored", "base_model") == {
        ("x", "amazon.nova-pro-v1:0"): (1, cost), (None, "amazon.nova-pro-v1:0"): (4, 4 * cost)}
    # A tag nobody sent: every request is untagged.
    assert await by_tag(store, "tag:team") == {(None,): (5, 5 * cost)}


async def test_a_replayed_batch_counts_its_tags_once(store: Store, make_event: MakeEvent) -> None:
    events = [tagged(make_event, f"r{i}", project="apollo") for i in range(3)]
    assert await store.write_batch("journal:1-1", events)
    assert not await store.write_batch("journal:1-1", events)
    assert await by_tag(store, "tag:project") == {("apollo",): (3, 3_000_000_000)}


async def test_ten_thousand_distinct_values_stay_bounded(store: Store, make_event: MakeEvent) -> None:
    """A client inventing a value per request fills the day's slots, then counts as `other`:
    the rows stay `max_tag_values` + 1 and the totals stay exact. Another org keeps its slots."""
    store.max_tag_values = 100
    events = [tagged(make_event, f"r{i}", project=f"p{i:05d}") for i in range(10_000)]
    for start in range(0, len(events), 2_500):  # as successive flushes
        await store.write_events(events[start:start + 2_500])
    await store.write_events([make_event("globex-1", org="globex", tags=(("project", "p09999"),))])
    rows = await by_tag(store, "org", "tag:project")
    acme = {key: value for key, value in rows.items() if key[0] == "acme"}
    assert len(acme) == 101
    assert acme[("acme", OTHER)][0] == 9_900
    assert sum(requests for requests, _ in acme.values()) == 10_000
    assert sum(cost for _, cost in acme.values()) == 10_000 * 1_000_000_000
    assert rows[("globex", "p09999")] == (1, 1_000_000_000)  # its own org's slots: kept
    # The values kept keep their slot in later flushes of the day; a new one is `other`.
    await store.write_events([tagged(make_event, "again", project="p00000"),
                              tagged(make_event, "new", project="brand-new")])
    rows = await by_tag(store, "org", "tag:project")
    assert rows[("acme", "p00000")][0] == 2 and rows[("acme", OTHER)][0] == 9_901


async def test_each_day_has_its_own_slots(store: Store, make_event: MakeEvent) -> None:
    store.max_tag_values = 1
    await store.write_events([make_event("a", tags=(("project", "x"),)), make_event("b", tags=(("project", "y"),)),
                              make_event("c", timestamp=T0 + 86_400, tags=(("project", "y"),))])
    assert await by_tag(store, "day", "tag:project") == {
        ("2025-03-10", "x"): (1, 1_000_000_000), ("2025-03-10", OTHER): (1, 1_000_000_000),
        ("2025-03-11", "y"): (1, 1_000_000_000)}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.text(alphabet="abcdef", min_size=1, max_size=3), min_size=1, max_size=60),
       max_values=st.integers(min_value=1, max_value=8), flushes=st.integers(min_value=1, max_value=5))
async def test_bound_property_sqlite(tmp_path: Path, make_event: MakeEvent, values: list[str], max_values: int,
                                     flushes: int) -> None:
    """Any values in any flushes: at most `max_values` kept values + `other`, every request
    counted once, and the values kept are the first distinct ones stored, each counted in full."""
    with SQLiteStore(":memory:", max_tag_values=max_values) as store:
        events = [tagged(make_event, f"r{i}", project=value) for i, value in enumerate(values)]
        size = -(-len(events) // flushes)
        for start in range(0, len(events), size):
            await store.write_events(events[start:start + size])
        rows = await by_tag(store, "tag:project")
        kept = {key[0] for key in rows} - {OTHER}
        assert len(kept) <= max_values
        assert sum(requests for requests, _ in rows.values()) == len(values)
        assert kept == set(list(dict.fromkeys(values))[:max_values])
        for value in kept:
            assert rows[(value,)][0] == values.count(value)


async def test_dynamodb_resolves_a_full_day_without_calls(dynamodb_store: DynamoDBStore,
                                                          make_event: MakeEvent) -> None:
    """Once a day's values are full, a new value costs the flush no round-trip."""
    dynamodb_store.max_tag_values = 3
    await dynamodb_store.write_events([tagged(make_event, f"r{i}", project=f"p{i}") for i in range(5)])
    calls: list[str] = []
    dynamodb_store._api().meta.events.register("before-call.dynamodb.UpdateItem",
                                               lambda **kwargs: calls.append("update"))
    await dynamodb_store.write_events([tagged(make_event, f"s{i}", project=f"q{i}") for i in range(50)])
    assert calls == []
    rows = await by_tag(dynamodb_store, "tag:project")
    assert rows[(OTHER,)][0] == 52


def test_values_are_trimmed_and_cut() -> None:
    assert clean_value("  apollo ") == "apollo"
    assert clean_value("x" * 300) == "x" * MAX_VALUE_CHARS
    assert clean_value("   ") is None and clean_value(7) is None


def test_the_journal_keeps_tags(make_event: MakeEvent) -> None:
    import json

    event = tagged(make_event, "a", project="apollo", job="j")
    assert UsageEvent.from_record(json.loads(encode(event))) == event
    assert UsageEvent.from_record({**event.to_record(), "tags": {"job": "j", "project": "apollo"}}) == event


def test_one_tag_per_report() -> None:
    assert normalize_group_by(["org", "tag:project"]) == ("org", "tag:project")
    with pytest.raises(ValueError, match="more than one tag"):
        normalize_group_by(["tag:a", "tag:b"])
    with pytest.raises(ValueError, match="cannot group by"):
        normalize_group_by(["tag:"])


def test_cache_forgets_old_days() -> None:
    cache = TagValueCache()
    for day in ("2025-03-01", "2025-03-02", "2025-03-03", "2025-03-04"):
        cache.learn(("acme", "project", day), ["x"], full=True)
    assert cache.resolve(("acme", "project", "2025-03-01"), "y") is None
    assert cache.resolve(("acme", "project", "2025-03-04"), "y") == OTHER
    assert cache.resolve(("acme", "project", "2025-03-04"), "x") == "x"


async def test_sqlite_keeps_each_requests_value_as_counted(sqlite_store: SQLiteStore, make_event: MakeEvent) -> None:
    sqlite_store.max_tag_values = 1
    await sqlite_store.write_events([tagged(make_event, "a", project="x"), tagged(make_event, "b", project="y")])
    first, second = await sqlite_store.get_event("a"), await sqlite_store.get_event("b")
    assert first is not None and first.tags == (("project", "x"),)
    assert second is not None and second.tags == (("project", OTHER),)


def _kept_one_by_one(conn: sqlite3.Connection, events: list[UsageEvent], max_values: int) -> None:
    """What `store_tags` did before issue #20, up to three statements per tag: the reference."""
    rows = []
    for event in events:
        for key, value in event.tags:
            scope = (event.org, key, event.day)
            if value != OTHER and not conn.execute(
                    "SELECT 1 FROM tag_values WHERE org = ? AND key = ? AND day = ? AND value = ?",
                    (*scope, value)).fetchone():
                (count,) = conn.execute("SELECT COUNT(*) FROM tag_values WHERE org = ? AND key = ? AND day = ?",
                                        scope).fetchone()
                if count >= max_values:
                    value = OTHER
                else:
                    conn.execute("INSERT INTO tag_values (org, key, day, value) VALUES (?, ?, ?, ?)", (*scope, value))
            rows.append((event.request_id, key, value))
    conn.executemany("INSERT OR IGNORE INTO usage_event_tags (request_id, key, value) VALUES (?, ?, ?)", rows)


_TAG_VALUES = st.sampled_from(["a", "b", "c", "d", "e", OTHER])


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(st.tuples(st.sampled_from(["acme", "zeta"]), st.integers(0, 1),
                                           st.dictionaries(st.sampled_from(["project", "team"]), _TAG_VALUES,
                                                           max_size=2)),
                                 max_size=10), max_size=4),
       max_values=st.integers(min_value=1, max_value=4))
def test_a_batch_keeps_the_values_one_by_one_would(batches: list[list[tuple[str, int, dict[str, str]]]],
                                                   max_values: int) -> None:
    """`store_tags` decides a batch's values at once: the same values kept, the same ones
    counted as `other`, as deciding tag by tag in the events' order, whatever was kept before."""
    batched, reference = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    for conn in (batched, reference):
        conn.executescript(TAGS_SCHEMA)
    number = 0
    for batch in batches:
        events = []
        for org, day, tags in batch:
            events.append(_make_event(f"r{number}", org=org, timestamp=T0 + day * 86_400, tags=make_tags(tags)))
            number += 1
        store_tags(batched, events, max_values)
        _kept_one_by_one(reference, events, max_values)
    for table in ("tag_values", "usage_event_tags"):
        query = f"SELECT * FROM {table} ORDER BY 1, 2, 3"
        assert batched.execute(query).fetchall() == reference.execute(query).fetchall()
