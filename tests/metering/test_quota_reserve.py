"""QuotaSelector.reserve: a request of known cost (an async job) is reserved exactly,
in any mode, and one that does not fit is refused for itself only."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from metering.events import utc_day
from metering.quotas import QuotaSelector
from tests.metering.test_quotas import MemoryQuotaStore

QUOTA = 1_000_000
MODEL = "amazon.nova-reel-v1:1"
T0 = 1_741_608_000.0


@given(st.lists(st.integers(min_value=1, max_value=2 * QUOTA), max_size=30))
def test_reservations_never_exceed_the_quota_and_refusals_are_per_request(costs: list[int]) -> None:
    async def run() -> None:
        store = MemoryQuotaStore()
        selector = QuotaSelector(store, tight_threshold=0.8)
        committed = 0
        for cost in costs:
            selection = await selector.reserve("acme", MODEL, cost, QUOTA)
            fits = committed + cost <= QUOTA
            assert (selection is not None) == fits  # refused exactly when it would overrun
            if selection is not None:
                committed += cost
                assert selection.reserved == cost and selection.model == MODEL
            assert sum(store.committed.values()) == committed <= QUOTA
        assert not store.exhausted  # nothing is marked exhausted by a request that did not fit

    asyncio.run(run())


def test_a_model_exhausted_by_other_traffic_admits_no_job() -> None:
    async def run() -> None:
        store = MemoryQuotaStore()
        selector = QuotaSelector(store, clock=lambda: T0)
        await store.mark_exhausted("acme", utc_day(T0), MODEL)
        assert await selector.reserve("acme", MODEL, 1, QUOTA) is None
        assert await selector.reserve("other", MODEL, 1, QUOTA) is not None

    asyncio.run(run())
