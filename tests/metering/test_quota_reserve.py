"""QuotaSelector.reserve: a request of known cost (an async job) is admitted by exactly
that cost against a budget lease, and one that does not fit is refused for itself only."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from metering.events import utc_day
from metering.leases import BudgetLeases
from metering.quotas import QuotaSelector
from tests.metering.budget_memory import MemoryBudgetStore

QUOTA = 1_000_000
MODEL = "amazon.nova-reel-v1:1"
T0 = 1_741_608_000.0
DAY = utc_day(T0)


@settings(deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=2 * QUOTA), max_size=30))
def test_jobs_never_exceed_the_quota_and_refusals_are_per_request(costs: list[int]) -> None:
    async def run() -> None:
        store = MemoryBudgetStore()
        selector = QuotaSelector(BudgetLeases(store, clock=lambda: T0))
        admitted = 0
        for cost in costs:
            selection = await selector.reserve("acme", DAY, MODEL, MODEL, QUOTA, cost)
            fits = admitted + cost <= QUOTA
            assert (selection is not None) == fits  # refused exactly when it would overrun
            if selection is not None:
                admitted += cost
                assert selection.grant is not None and selection.grant.worst == cost and selection.model == MODEL
            assert admitted <= sum(store.committed.values()) <= QUOTA  # held by claims, never past the quota
        assert not store.exhausted  # nothing is marked exhausted by a request that did not fit

    asyncio.run(run())


def test_a_model_exhausted_by_other_traffic_admits_no_job() -> None:
    async def run() -> None:
        store = MemoryBudgetStore()
        selector = QuotaSelector(BudgetLeases(store, clock=lambda: T0))
        await store.mark_exhausted("acme", DAY, MODEL)
        store.committed[("acme", DAY, MODEL)] = QUOTA  # spent by other replicas
        assert await selector.reserve("acme", DAY, MODEL, MODEL, QUOTA, 1) is None
        assert await selector.reserve("other", DAY, MODEL, MODEL, QUOTA, 1) is not None

    asyncio.run(run())
