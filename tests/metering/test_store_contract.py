"""The store contract, run against both backends: SQLite and DynamoDB Local over HTTP."""

from __future__ import annotations

import asyncio
import calendar
import random
import time
from collections.abc import Callable

import pytest

from metering.events import UsageEvent
from metering.store import KeyStore, LeaseStore, Store, UsageStore

pytestmark = pytest.mark.anyio

T0 = float(calendar.timegm((2025, 3, 10, 12, 0, 0)))
DAY_SECONDS = 86_400.0
DAY = "2025-03-10"
MakeEvent = Callable[..., UsageEvent]


async def total_requests(store: Store) -> int:
    return sum(row.requests for row in await store.usage_summary(0, None, []))


async def test_implements_the_protocols(store: Store) -> None:
    assert isinstance(store, UsageStore)
    assert isinstance(store, LeaseStore)
    assert isinstance(store, KeyStore)


async def test_a_batch_applies_once(store: Store, make_event: MakeEvent) -> None:
    events = [make_event(f"r{i}", cost_pico_usd=10, quota_scope="acme") for i in range(5)]
    assert await store.write_batch("journal:1-1", events) is True
    assert await store.write_batch("journal:1-1", events) is False  # a replay: counted once
    assert await store.write_batch("journal:2-2", [make_event("other", cost_pico_usd=1)]) is True
    [row] = await store.usage_summary(0, None, [])
    assert (row.requests, row.cost_pico_usd) == (6, 51)
    budget = await store.read_budget("acme", DAY)
    assert budget.model("amazon.nova-pro-v1:0").spent == budget.model("amazon.nova-pro-v1:0").committed == 50


async def test_write_events_is_idempotent_for_the_same_events(store: Store, make_event: MakeEvent) -> None:
    events = [make_event("a"), make_event("b")]
    await store.write_events(events)
    await store.write_events(list(reversed(events)))  # the same set of request ids
    await store.write_events([])
    assert await total_requests(store) == 2


async def test_a_report_id_is_claimed_once(store: Store) -> None:
    """`POST /v1/usage-reports` records a report only when it claims its id."""
    claims = await asyncio.gather(*(store.claim_report("report:acme/batch:job-1") for _ in range(4)))
    assert sorted(claims) == [False, False, False, True]
    assert await store.claim_report("report:acme/batch:job-1") is False
    assert await store.claim_report("report:acme/batch:job-2") is True


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ([], {(): (4, 1111)}),
        (["org"], {("acme",): (3, 111), ("zeta",): (1, 1000)}),
        (["app"], {("chatbot",): (2, 11), ("search",): (2, 1100)}),
        (["model"], {("m-a",): (3, 1011), ("m-b",): (1, 100)}),
        (["day"], {("2025-03-10",): (3, 111), ("2025-03-11",): (1, 1000)}),
        (["org", "app"], {("acme", "chatbot"): (2, 11), ("acme", "search"): (1, 100),
                          ("zeta", "search"): (1, 1000)}),
        (["day", "org", "model"], {("2025-03-10", "acme", "m-a"): (2, 11),
                                   ("2025-03-10", "acme", "m-b"): (1, 100),
                                   ("2025-03-11", "zeta", "m-a"): (1, 1000)}),
    ],
)
async def test_summary_groups(store: Store, make_event: MakeEvent, by: list[str],
                              expected: dict[tuple[str, ...], tuple[int, int]]) -> None:
    await store.write_batch("b", [
        make_event("r1", org="acme", app="chatbot", model="m-a", cost_pico_usd=1),
        make_event("r2", org="acme", app="chatbot", model="m-a", cost_pico_usd=10),
        make_event("r3", org="acme", app="search", model="m-b", cost_pico_usd=100),
        make_event("r4", org="zeta", app="search", model="m-a", cost_pico_usd=1000, timestamp=T0 + DAY_SECONDS),
    ])
    rows = await store.usage_summary(0, None, by)
    assert {row.group(by): (row.requests, row.cost_pico_usd) for row in rows} == expected
    assert [row.group(by) for row in rows] == sorted(expected)


NOVA = "amazon.nova-pro-v1:0"
SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        (["base_model"], {(NOVA,): (3, 111), (SONNET,): (3, 111_000)}),
        (["org", "base_model"], {("acme", NOVA): (2, 11), ("acme", SONNET): (2, 11_000),
                                 ("zeta", NOVA): (1, 100), ("zeta", SONNET): (1, 100_000)}),
        # With `model` as well: each model id keeps its row, beside its base model.
        (["base_model", "model"], {(NOVA, NOVA): (1, 1), (NOVA, f"us.{NOVA}"): (2, 110),
                                   (SONNET, f"global.{SONNET}"): (2, 11_000),
                                   (SONNET, f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.{SONNET}"):
                                       (1, 100_000)}),
    ],
)
async def test_summary_by_base_model(store: Store, make_event: MakeEvent, by: list[str],
                                     expected: dict[tuple[str, ...], tuple[int, int]]) -> None:
    """Issue #16 4c: the geo/global prefix and the ARN stripped (`adapters.modelid.base_model_id`)."""
    arn = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.{SONNET}"
    await store.write_batch("b", [
        make_event("n1", model=NOVA, cost_pico_usd=1),
        make_event("n2", model=f"us.{NOVA}", cost_pico_usd=10),
        make_event("n3", org="zeta", model=f"us.{NOVA}", cost_pico_usd=100),
        make_event("s1", model=f"global.{SONNET}", cost_pico_usd=1000),
        make_event("s2", model=f"global.{SONNET}", cost_pico_usd=10_000),
        make_event("s3", org="zeta", model=arn, cost_pico_usd=100_000),
    ])
    rows = await store.usage_summary(0, None, by)
    assert {row.group(by): (row.requests, row.cost_pico_usd) for row in rows} == expected
    assert [row.group(by) for row in rows] == sorted(expected)
    assert all(row.model is None for row in rows) or "model" in by


async def test_summary_sums_every_counter(store: Store, make_event: MakeEvent) -> None:
    await store.write_batch("b", [
        make_event("a", input_tokens=1, output_tokens=2, cache_read_tokens=3, cache_write_tokens=4,
                   cost_pico_usd=5, estimated=True),
        make_event("b", input_tokens=10, output_tokens=20, cache_read_tokens=30, cache_write_tokens=40,
                   cost_pico_usd=0, priced=False),
    ])
    [row] = await store.usage_summary(0, None, ["org"])
    assert (row.org, row.requests, row.input_tokens, row.output_tokens, row.cache_read_tokens,
            row.cache_write_tokens, row.cost_pico_usd, row.estimated_requests,
            row.unpriced_requests) == ("acme", 2, 11, 22, 33, 44, 5, 1, 1)


async def test_summary_by_whole_days(store: Store, make_event: MakeEvent) -> None:
    midnight = T0 + 12 * 3600
    await store.write_batch("b", [make_event("d1", timestamp=T0), make_event("d2", timestamp=midnight),
                                  make_event("d3", timestamp=midnight + 3600)])
    assert sum(r.requests for r in await store.usage_summary(midnight, None, [])) == 2
    assert sum(r.requests for r in await store.usage_summary(midnight - DAY_SECONDS, midnight, [])) == 1
    assert await store.usage_summary(midnight + 2 * DAY_SECONDS, None, []) == []


async def test_concurrent_writers_give_exact_totals(store: Store, make_event: MakeEvent) -> None:
    """2,000 events written by 40 concurrent tasks in 200 batches: nothing lost."""
    orgs, models = ("acme", "zeta"), ("m-a", "m-b", "m-c")

    async def writer(worker: int) -> None:
        for batch in range(5):
            await store.write_batch(f"w{worker}-{batch}", [
                make_event(f"w{worker}-{batch}-{i}", org=orgs[i % 2], model=models[i % 3],
                           cost_pico_usd=i, input_tokens=i + 1, quota_scope=orgs[i % 2])
                for i in range(10)
            ])

    await asyncio.gather(*(writer(worker) for worker in range(40)))
    [row] = await store.usage_summary(0, None, [])
    assert (row.requests, row.cost_pico_usd, row.input_tokens) == (2000, 200 * 45, 200 * 55)
    by_org = {r.org: r.requests for r in await store.usage_summary(0, None, ["org"])}
    assert by_org == {"acme": 1000, "zeta": 1000}
    budget = await store.read_budget("acme", DAY)
    assert sum(model.committed for model in budget.models.values()) == 200 * (0 + 2 + 4 + 6 + 8)


async def test_model_rates_per_minute(store: Store, make_event: MakeEvent) -> None:
    await store.write_batch("b", [
        make_event("a", timestamp=T0 + 1, input_tokens=100, output_tokens=10),
        make_event("b", timestamp=T0 + 59, input_tokens=1, output_tokens=1, cache_read_tokens=3),
        make_event("c", timestamp=T0 + 61, input_tokens=7, output_tokens=0),
        make_event("d", timestamp=T0 + 61, model="other", input_tokens=5),
    ])
    rates = []
    for _ in range(100):  # a GSI is eventually consistent
        rates = await store.model_rates("amazon.nova-pro-v1:0", T0, T0 + 120)
        if sum(rate.rpm for rate in rates) == 3:
            break
        await asyncio.sleep(0.05)
    assert [(r.day, r.minute, r.tpm, r.rpm) for r in rates] == [(DAY, "12:00", 115, 2), (DAY, "12:01", 7, 1)]
    assert [r.minute for r in await store.model_rates("amazon.nova-pro-v1:0", T0 + 60, T0 + 120)] == ["12:01"]
    assert await store.model_rates("amazon.nova-pro-v1:0", T0, T0 + 60) == rates[:1]


async def test_refused_requests_make_no_usage_row_but_settle_their_lease(
    store: Store, make_event: MakeEvent
) -> None:
    """A 4xx Bedrock billed nothing for names a client-chosen model: no usage row, no
    rate, and nothing spent of the lease it was admitted on (issue #17 item 5)."""
    model = "amazon.nova-pro-v1:0"
    granted, _ = await store.claim_lease("acme", DAY, model, "h1", 500, 10_000, T0 + 30)
    assert granted
    zero = dict(input_tokens=0, output_tokens=0, cache_read_tokens=0, cache_write_tokens=0, cost_pico_usd=0)
    await store.write_batch("b", [
        make_event("served"),
        *(make_event(f"bogus-{i}", model=f"acme.invented-{i}-v1:0", status=400, **zero) for i in range(5)),
        make_event("throttled", status=429, quota_scope="acme", reserved_pico_usd=0, lease="h1", **zero),
    ])
    rows = await store.usage_summary(0, None, ["model"])
    assert [(row.model, row.requests) for row in rows] == [(model, 1)]
    assert set(await store.scope_totals("acme", DAY)) <= {model}
    budget = (await store.read_budget("acme", DAY)).model(model)
    assert (budget.spent, budget.leased) == (0, 500)
    assert await store.model_rates("acme.invented-0-v1:0", T0 - 60, T0 + 60) == []


async def test_claims_and_flushes_race_without_losing_updates(store: Store, make_event: MakeEvent) -> None:
    """Lease claims (UpdateItem) and flushes (transactions) on one quota item at once."""
    model = "amazon.nova-pro-v1:0"
    rng = random.Random(4)
    amounts = [rng.randint(1, 50) for _ in range(30)]

    async def flusher(i: int) -> None:
        await store.write_batch(f"f{i}", [make_event(f"f{i}", quota_scope="acme", cost_pico_usd=3,
                                                     reserved_pico_usd=2, lease="h0")])

    results = await asyncio.gather(
        *(store.claim_lease("acme", DAY, model, f"h{i % 3}", amount, 10**9, T0 + 30)
          for i, amount in enumerate(amounts)),
        *(flusher(i) for i in range(20)),
    )
    assert all(granted for granted, _ in results[:30])
    budget = (await store.read_budget("acme", DAY)).model(model)
    assert budget.committed == sum(amounts) + 20 * (3 - 2)
    assert budget.spent == 20 * 3 and budget.leased == sum(amounts) - 20 * 2


async def test_sticky_exhaustion(store: Store) -> None:
    assert await store.exhausted_models("acme", DAY) == frozenset()
    await asyncio.gather(*(store.mark_exhausted("acme", DAY, "m-a") for _ in range(5)))
    await store.mark_exhausted("acme", DAY, "m-b")
    assert await store.exhausted_models("acme", DAY) == {"m-a", "m-b"}
    assert await store.exhausted_models("acme", "2025-03-11") == frozenset()
    assert await store.exhausted_models("acme/chatbot", DAY) == frozenset()


async def test_exhaustion_times_keep_the_first_mark(store: Store) -> None:
    """When a scope fell back from a model: the first mark's time, never moved by a later one."""
    assert await store.exhaustion_times("acme", DAY) == {}
    before = time.time()
    await store.mark_exhausted("acme", DAY, "m-a")
    first = (await store.exhaustion_times("acme", DAY))["m-a"]
    assert first is not None and before <= first <= time.time()
    await asyncio.gather(*(store.mark_exhausted("acme", DAY, "m-a") for _ in range(3)))
    await store.mark_exhausted("acme", DAY, "m-b")
    times = await store.exhaustion_times("acme", DAY)
    assert set(times) == {"m-a", "m-b"} and times["m-a"] == first
    assert (times["m-b"] or 0) >= first
    assert await store.exhaustion_times("acme", "2025-03-11") == {}
    assert await store.exhaustion_times("acme/chatbot", DAY) == {}


async def test_keys(store: Store) -> None:
    first = await store.create_key("acme", "chatbot")
    second = await store.create_key("zeta", "search")
    assert first.access_key_id != second.access_key_id and len(first.access_key_id) == 20
    record = await store.get_key(first.access_key_id)
    assert record is not None and record.active and record.secret_matches(first.secret)
    assert (record.org, record.app) == ("acme", "chatbot")
    assert await store.get_key("CKIA0000000000000000") is None
    assert await store.revoke_key(first.access_key_id) is True
    assert await store.revoke_key(first.access_key_id) is False
    assert await store.revoke_key("CKIA0000000000000000") is False
    revoked = await store.get_key(first.access_key_id)
    assert revoked is not None and not revoked.active
    keys = []
    for _ in range(100):  # DynamoDB lists through its (eventually consistent) GSI
        keys = await store.list_keys()
        if len(keys) == 2 and keys[0].revoked_at is not None:
            break
        await asyncio.sleep(0.05)
    assert [k.access_key_id for k in keys] == [first.access_key_id, second.access_key_id]
    with pytest.raises(ValueError):
        await store.create_key("", "app")
