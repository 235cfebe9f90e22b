"""The budget-lease contract (metering/budget.py) on every backend: the in-memory double
the simulation runs on, SQLite, and DynamoDB Local over HTTP."""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from metering.budget import LeaseRecord, LeaseStore
from metering.events import UsageEvent
from tests.metering.budget_memory import MemoryBudgetStore
from tests.metering.conftest import opened_store

pytestmark = pytest.mark.anyio

DAY = "2025-03-10"
T0 = float(calendar.timegm((2025, 3, 10, 12, 0, 0)))
MODEL = "amazon.nova-pro-v1:0"
MakeEvent = Callable[..., UsageEvent]


@pytest.fixture(params=["memory", "sqlite", "dynamodb"])
async def budgets(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryBudgetStore()
    else:
        async with opened_store(request.param, request, tmp_path) as opened:
            yield opened


def settle(make_event: MakeEvent, request_id: str, cost: int, reserved: int, lease: str,
           scope: str = "acme") -> UsageEvent:
    return make_event(request_id, quota_scope=scope, cost_pico_usd=cost, reserved_pico_usd=reserved, lease=lease)


async def test_implements_the_protocol(budgets: Any) -> None:
    assert isinstance(budgets, LeaseStore)


async def test_claims_are_atomic_and_never_pass_the_quota(budgets: Any) -> None:
    quota, amount = 1_000, 70
    results = await asyncio.gather(*(budgets.claim_lease("acme", DAY, MODEL, f"h{i % 3}", amount, quota, T0 + 30)
                                     for i in range(40)))
    assert sum(granted for granted, _ in results) == quota // amount  # 14 fit, 26 refused
    budget = (await budgets.read_budget("acme", DAY)).model(MODEL)
    assert budget.committed == budget.leased == (quota // amount) * amount and budget.spent == 0
    assert {record.expires_at for record in budget.leases.values()} == {T0 + 30}
    granted, seen = await budgets.claim_lease("acme", DAY, MODEL, "h0", quota + 1, quota, T0 + 30)
    assert not granted and seen.model(MODEL).committed == 980  # what it was: nothing changed
    granted, after = await budgets.claim_lease("acme", DAY, MODEL, "h9", 20, quota, T0 + 60)  # exactly full
    assert granted and after.model(MODEL).committed == quota
    assert after.model(MODEL).leases["h9"] == LeaseRecord(20, T0 + 60)
    assert (await budgets.claim_lease("acme", DAY, "other", "h0", 1, quota, T0))[0]  # per model
    assert (await budgets.read_budget("acme", "2025-03-11")).models == {}


async def test_a_flush_moves_what_leases_covered_to_spent_once(budgets: Any, make_event: MakeEvent) -> None:
    await budgets.claim_lease("acme", DAY, MODEL, "h1", 500, 10_000, T0 + 30)
    events = [
        settle(make_event, "r1", cost=120, reserved=100, lease="h1"),  # 20 beyond its worst case
        settle(make_event, "r2", cost=0, reserved=0, lease="h1"),  # failed upstream: costs nothing
        make_event("r3", quota_scope="acme", cost_pico_usd=7),  # unchecked (fail-open): all of it
        make_event("r4", quota_scope="", cost_pico_usd=1_000_000),  # no quota: not counted
    ]
    assert await budgets.write_batch("b1", events)
    assert not await budgets.write_batch("b1", events)  # a replay counts nothing twice
    budget = (await budgets.read_budget("acme", DAY)).model(MODEL)
    assert (budget.committed, budget.leased, budget.spent) == (527, 400, 127)
    assert budget.leases["h1"] == LeaseRecord(400, T0 + 30)


async def test_renewing_giving_back_and_dropping(budgets: Any) -> None:
    await budgets.claim_lease("acme", DAY, MODEL, "h1", 300, 1_000, T0 + 30)
    assert await budgets.renew_lease("acme", DAY, MODEL, "h1", 0, T0 + 90)
    assert await budgets.renew_lease("acme", DAY, MODEL, "h1", 100, None)
    budget = (await budgets.read_budget("acme", DAY)).model(MODEL)
    assert (budget.committed, budget.leases["h1"]) == (200, LeaseRecord(200, T0 + 90))
    # Dropping takes the lease away only when what is given back is all it holds.
    assert await budgets.renew_lease("acme", DAY, MODEL, "h1", 50, None, drop=True)
    budget = (await budgets.read_budget("acme", DAY)).model(MODEL)
    assert (budget.committed, budget.leases["h1"].amount) == (150, 150)
    assert await budgets.renew_lease("acme", DAY, MODEL, "h1", 150, None, drop=True)
    budget = (await budgets.read_budget("acme", DAY)).model(MODEL)
    assert (budget.committed, budget.leases) == (0, {})
    assert not await budgets.renew_lease("acme", DAY, MODEL, "h1", 0, T0 + 120)  # gone: nothing changes
    assert not await budgets.renew_lease("acme", DAY, MODEL, "nobody", 10, None)
    assert (await budgets.read_budget("acme", DAY)).model(MODEL).committed == 0


async def test_reclaim_takes_only_leases_unchanged_since_read(budgets: Any) -> None:
    await budgets.claim_lease("acme", DAY, MODEL, "dead", 300, 1_000, T0 + 30)
    await budgets.claim_lease("acme", DAY, MODEL, "live", 200, 1_000, T0 + 30)
    seen = (await budgets.read_budget("acme", DAY)).model(MODEL)
    expired = seen.expired(T0 + 31)
    assert set(expired) == {"dead", "live"}
    await budgets.renew_lease("acme", DAY, MODEL, "live", 0, T0 + 60)  # renewed meanwhile
    assert not await budgets.reclaim_leases("acme", DAY, MODEL, expired)
    assert (await budgets.read_budget("acme", DAY)).model(MODEL).committed == 500  # all or nothing
    assert await budgets.reclaim_leases("acme", DAY, MODEL, {"dead": expired["dead"]})
    budget = (await budgets.read_budget("acme", DAY)).model(MODEL)
    assert (budget.committed, set(budget.leases)) == (200, {"live"})


async def test_a_settlement_after_a_reclaim_is_an_orphan_whose_reclaim_counts_it(
        budgets: Any, make_event: MakeEvent) -> None:
    """A replica died holding a request's worst case; its journal is replayed after its lease
    was reclaimed: the spend lands as a negative orphan, and reclaiming it adds it back."""
    await budgets.claim_lease("acme", DAY, MODEL, "dead", 300, 1_000, T0 + 30)
    lease = (await budgets.read_budget("acme", DAY)).model(MODEL).leases["dead"]
    assert await budgets.reclaim_leases("acme", DAY, MODEL, {"dead": lease})
    await budgets.write_batch("replay", [settle(make_event, "r1", cost=250, reserved=250, lease="dead")])
    budget = (await budgets.read_budget("acme", DAY)).model(MODEL)
    assert budget.leases["dead"] == LeaseRecord(-250, None) and budget.spent == 250 and budget.committed == 0
    assert budget.expired(T0) == {"dead": LeaseRecord(-250, None)}  # an orphan is always reclaimable
    assert await budgets.reclaim_leases("acme", DAY, MODEL, budget.expired(T0))
    budget = (await budgets.read_budget("acme", DAY)).model(MODEL)
    assert (budget.committed, budget.spent, budget.leases) == (250, 250, {})


async def test_sticky_exhaustion_is_part_of_the_budget(budgets: Any) -> None:
    await asyncio.gather(*(budgets.mark_exhausted("acme", DAY, MODEL) for _ in range(3)))
    assert (await budgets.read_budget("acme", DAY)).exhausted == {MODEL}
    assert await budgets.exhausted_models("acme", DAY) == {MODEL}
    assert (await budgets.read_budget("acme", "2025-03-11")).exhausted == frozenset()
    granted, seen = await budgets.claim_lease("acme", DAY, MODEL, "h", 10, 100, T0)
    assert granted and seen.exhausted == {MODEL}
