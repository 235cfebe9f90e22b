"""Budget leases and the chain selector, one behaviour at a time (the simulation in
test_lease_simulation.py checks the bound over thousands of random days)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from metering.budget import LeaseRecord
from metering.events import UsageEvent, utc_day
from metering.leases import (
    MIN_SLICE_REQUESTS,
    BudgetLeases,
    BudgetUnavailable,
    Grant,
    Mode,
    Refusal,
)
from metering.quotas import QuotaExhausted, QuotaSelector, QuotaUnavailable
from tests.metering.budget_memory import MemoryBudgetStore

NOW = 1_795_000_000.0  # 2026-11-18 09:46 UTC
DAY = utc_day(NOW)
A, B = "amazon.nova-pro-v1:0", "amazon.nova-lite-v1:0"
KEY = ("acme", DAY, A)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class CountingStore(MemoryBudgetStore):
    """Counts calls; `down` makes every call fail as an unreachable store does."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.down = False

    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name in ("read_budget", "claim_lease", "renew_lease", "reclaim_leases", "mark_exhausted"):
            async def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                await asyncio.sleep(0)  # a round trip: other requests run meanwhile
                if self.down:
                    raise ConnectionError("store unreachable")
                return await attribute(*args, **kwargs)
            return counted
        return attribute


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


def leases(store: MemoryBudgetStore, clock: Clock, **kwargs: Any) -> BudgetLeases:
    return BudgetLeases(store, clock=clock, **kwargs)


def grant(result: Grant | Refusal) -> Grant:
    assert isinstance(result, Grant), result
    return result


def test_far_from_the_quota_a_slice_covers_many_requests_without_a_store_call() -> None:
    store, clock = CountingStore(), Clock()
    allocator = leases(store, clock)

    async def scenario() -> None:
        first = grant(await allocator.admit(KEY, 10_000_000, 100))
        assert first.mode is Mode.NORMAL
        calls = len(store.calls)  # one read, one claim
        for _ in range(MIN_SLICE_REQUESTS - 1):
            allocator.settle(grant(await allocator.admit(KEY, 10_000_000, 100)), 60)
        assert len(store.calls) == calls  # no store round-trip per request
        budget = store.budget("acme", DAY).model(A)
        assert budget.committed == budget.leased == MIN_SLICE_REQUESTS * 100

    run(scenario())


def test_near_the_quota_a_claim_is_the_request_alone() -> None:
    store, clock = CountingStore(), Clock()
    allocator = leases(store, clock)

    async def scenario() -> None:
        run_for = grant(await allocator.admit(KEY, 1_000, 300))  # share = 1000 / 4 = 250 < 300
        assert run_for.mode is Mode.TIGHT
        assert store.budget("acme", DAY).model(A).leased == 300

    run(scenario())


def test_admission_counts_its_own_unflushed_spend() -> None:
    """Issue #18 item 12: the second request sees the first's worst case at once, whatever
    the store has been told (nothing was flushed here)."""
    store, clock = CountingStore(), Clock()
    allocator = leases(store, clock)

    async def scenario() -> None:
        first = grant(await allocator.admit(KEY, 1_000, 600))
        assert await allocator.admit(KEY, 1_000, 600) == Refusal(exhausted=False)
        assert allocator.settle(first, 550) == 550  # r = min(cost, worst); 50 goes back to the slice
        assert await allocator.admit(KEY, 1_000, 451) == Refusal(exhausted=False)  # 1000 - 550 < 451
        grant(await allocator.admit(KEY, 1_000, 450))

    run(scenario())


def test_a_request_that_does_not_fit_moves_alone_and_smaller_ones_still_use_the_model() -> None:
    """Issue #18 item 14 (#17 item 3): with 360 left, maxTokens 5000 is moved for itself only."""
    store, clock = CountingStore(), Clock()
    allocator = leases(store, clock)
    selector = QuotaSelector(allocator)
    quota_of = {A: (A, 1_000), B: None}.get

    async def scenario() -> None:
        big = grant(await allocator.admit(KEY, 1_000, 640))
        allocator.settle(big, 640)
        huge = await selector.select("acme", DAY, (A, B), quota_of, lambda model: 5_000)
        assert (huge.model, huge.fallback) == (B, True)
        small = await selector.select("acme", DAY, (A, B), quota_of, lambda model: 300)
        assert (small.model, small.fallback) == (A, False)
        assert not allocator.exhausted(KEY) and store.exhausted == {}

    run(scenario())


def test_a_model_is_exhausted_only_once_its_quota_is_spent_and_then_sticky_until_midnight() -> None:
    store, clock = CountingStore(), Clock()
    allocator = leases(store, clock)
    selector = QuotaSelector(allocator)
    quota_of = {A: (A, 1_000), B: None}.get

    async def scenario() -> None:
        for _ in range(99):
            allocator.settle(grant(await allocator.admit(KEY, 1_000, 10)), 10)
        # 990 spent, but not flushed: the store cannot tell yet, so this is one request's refusal.
        assert await allocator.admit(KEY, 1_000, 20) == Refusal(exhausted=False)
        await store.write_batch("flush", [_event(f"r{i}", cost=10, reserved=10, lease=_holder(allocator))
                                          for i in range(99)])
        clock.now += 1
        assert await allocator.admit(KEY, 1_000, 20) == Refusal(exhausted=True)
        assert store.exhausted == {("acme", DAY): {A}}
        # Sticky: even a request that would fit goes to the fallback today.
        assert (await selector.select("acme", DAY, (A, B), quota_of, lambda model: 1)).model == B
        other = leases(store, clock)  # another replica learns it from the store
        assert await other.admit(KEY, 1_000, 20) == Refusal(exhausted=True)
        tomorrow = ("acme", utc_day(NOW + 86_400), A)
        clock.now += 86_400
        grant(await allocator.admit(tomorrow, 1_000, 20))

    run(scenario())


def test_no_model_left_says_whether_the_chain_is_spent_or_the_request_too_big() -> None:
    store, clock = CountingStore(), Clock()
    selector = QuotaSelector(leases(store, clock))
    quota_of = {A: (A, 10**9), B: (B, 5 * 10**8)}.get  # pico-USD: $0.001 and $0.0005

    async def scenario() -> None:
        with pytest.raises(QuotaExhausted, match=r"worst-case cost .* scope 'acme'.*00:00 UTC") as raised:
            await selector.select("acme", DAY, (A, B), quota_of, lambda model: 2 * 10**9)
        assert raised.value.request_only
        store.committed[("acme", DAY, A)] = 10**9
        store.committed[("acme", DAY, B)] = 5 * 10**8
        with pytest.raises(QuotaExhausted, match=r"exhausted for scope 'acme'.*\(\$0.001/day\)") as raised:
            await selector.select("acme", DAY, (A, B), quota_of, lambda model: 1)
        assert not raised.value.request_only

    run(scenario())


def test_failed_requests_give_their_worst_case_back() -> None:
    store, clock = CountingStore(), Clock()
    allocator = leases(store, clock)

    async def scenario() -> None:
        first = grant(await allocator.admit(KEY, 1_000, 700))
        assert allocator.settle(first, 0) == 0  # a 5xx upstream, or a hang-up before the first byte
        assert allocator.settle(first, 700) == 0  # once
        second = grant(await allocator.admit(KEY, 1_000, 700))
        allocator.release(second)  # never sent
        grant(await allocator.admit(KEY, 1_000, 1_000))

    run(scenario())


def test_a_dead_replicas_expired_lease_is_reclaimed_when_budget_is_needed() -> None:
    store, clock = CountingStore(), Clock()

    async def scenario() -> None:
        dead = leases(store, clock, ttl=30)
        grant(await dead.admit(KEY, 1_000, 900))  # and then it is killed
        live = leases(store, clock, ttl=30)
        assert await live.admit(KEY, 1_000, 500) == Refusal(exhausted=False)
        clock.now += 29
        assert await live.admit(KEY, 1_000, 500) == Refusal(exhausted=False)  # not expired yet
        clock.now += 2
        grant(await live.admit(KEY, 1_000, 500))
        assert "reclaim_leases" in store.calls

    run(scenario())


def test_an_unreachable_store_spends_the_slice_then_fails_closed_or_open() -> None:
    store, clock = CountingStore(), Clock()
    allocator = leases(store, clock)
    quota_of = {A: (A, 10_000_000)}.get

    async def scenario() -> None:
        grant(await allocator.admit(KEY, 10_000_000, 100))
        store.down = True
        for _ in range(MIN_SLICE_REQUESTS - 1):  # what it holds
            grant(await allocator.admit(KEY, 10_000_000, 100))
        with pytest.raises(BudgetUnavailable):
            await allocator.admit(KEY, 10_000_000, 100)
        with pytest.raises(QuotaUnavailable):
            await QuotaSelector(allocator).select("acme", DAY, (A,), quota_of, lambda m: 100, fail_closed=True)
        unchecked: list[tuple[str, str]] = []
        opened = await QuotaSelector(allocator, lambda s, m: unchecked.append((s, m))).select(
            "acme", DAY, (A,), quota_of, lambda m: 100)
        assert opened.unchecked and opened.model == A and unchecked == [("acme", A)]

    run(scenario())


def test_a_slice_is_not_used_past_its_deadline_without_renewal() -> None:
    store, clock = CountingStore(), Clock()
    allocator = leases(store, clock, ttl=30)

    async def scenario() -> None:
        grant(await allocator.admit(KEY, 10_000_000, 100))
        store.down = True
        clock.now += 30 - 30 / 6  # the margin for clock skew: stop before the store's expiry
        with pytest.raises(BudgetUnavailable):
            await allocator.admit(KEY, 10_000_000, 100)

    run(scenario())


def test_upkeep_renews_busy_leases_and_gives_back_idle_ones() -> None:
    store, clock = CountingStore(), Clock()
    allocator = leases(store, clock, ttl=30)

    async def scenario() -> None:
        long_stream = grant(await allocator.admit(KEY, 10_000_000, 100))
        clock.now += 16  # idle for ttl/2 with a request in flight, past half its life:
        await allocator.maintain()  # the free part goes back, the rest is renewed
        record = store.budget("acme", DAY).model(A).leases[long_stream.holder]
        assert record == LeaseRecord(100, NOW + 16 + 30)
        assert store.budget("acme", DAY).model(A).committed == 100
        allocator.settle(long_stream, 40)
        allocator.on_stored({("acme", DAY, A, long_stream.holder): 40})
        store.leases[("acme", DAY, A)][long_stream.holder] = LeaseRecord(60, record.expires_at)  # the flush
        store.committed[("acme", DAY, A)] = 100
        await allocator.close()  # SIGTERM: the rest goes back and the settled lease is removed
        budget = store.budget("acme", DAY).model(A)
        assert (budget.committed, budget.leases) == (40, {})

    run(scenario())


def test_a_lease_reclaimed_under_a_live_replica_is_replaced_and_its_settlements_become_orphans() -> None:
    store, clock = CountingStore(), Clock()
    allocator = leases(store, clock, ttl=30)

    async def scenario() -> None:
        first = grant(await allocator.admit(KEY, 1_000, 200))
        holder = first.holder
        budget = store.budget("acme", DAY).model(A)
        await store.reclaim_leases("acme", DAY, A, {holder: budget.leases[holder]})  # a partition outlived it
        clock.now += 16
        await allocator.maintain()  # the renewal finds it gone: it is lost
        second = grant(await allocator.admit(KEY, 1_000, 200))
        assert second.holder != holder
        assert allocator.settle(first, 150) == 150
        await store.write_batch("late", [_event("r1", cost=150, reserved=150, lease=holder)])
        assert store.budget("acme", DAY).model(A).leases[holder] == LeaseRecord(-150, None)

    run(scenario())


def test_requests_waiting_on_a_claim_are_claimed_for_together() -> None:
    store, clock = CountingStore(), Clock()
    allocator = leases(store, clock)

    async def scenario() -> None:
        results = await asyncio.gather(*(allocator.admit(KEY, 2_000, 100) for _ in range(10)))
        assert all(isinstance(result, Grant) for result in results)
        assert store.calls.count("claim_lease") == 1

    run(scenario())


def _holder(allocator: BudgetLeases) -> str:
    [holder] = allocator.busy_holders()
    return holder


def _event(request_id: str, *, cost: int, reserved: int, lease: str) -> UsageEvent:
    return UsageEvent(request_id=request_id, timestamp=NOW, org="acme", app="app", operation="Converse",
                      requested_model=A, model=A, input_tokens=0, output_tokens=0, cache_read_tokens=0,
                      cache_write_tokens=0, cost_pico_usd=cost, priced=True, latency_ms=1.0, first_byte_ms=None,
                      status=200, estimated=False, quota_scope="acme", reserved_pico_usd=reserved, lease=lease)



def test_each_quota_is_named_exactly_as_configured() -> None:
    usd = 10**12  # pico-USD
    pattern = r"scope 'acme'.*amazon.nova-pro-v1:0 \(\$1/day\), amazon.nova-lite-v1:0 \(\$2.000000000001/day\)"
    with pytest.raises(QuotaExhausted, match=pattern):
        raise QuotaExhausted("acme", (A, B), {A: usd, B: 2 * usd + 1}, request_only=False)


def test_a_job_is_admitted_by_exactly_its_cost_for_itself_only() -> None:
    """An async job's cost is known before it runs: held exactly against a lease, settled
    at it; one that does not fit is refused without exhausting the model."""
    store, clock = CountingStore(), Clock()
    selector = QuotaSelector(leases(store, clock))

    async def scenario() -> None:
        job = await selector.reserve("acme", DAY, A, A, 1_000, 700)
        assert job is not None and job.grant is not None and job.grant.worst == 700
        assert await selector.reserve("acme", DAY, A, A, 1_000, 400) is None  # 700 + 400 > 1000
        assert selector.settle(job, 700)[0] == 700  # all of it from the lease
        small = await selector.reserve("acme", DAY, A, A, 1_000, 300)
        assert small is not None  # not exhausted: a job that fits still runs
        store.down = True
        with pytest.raises(QuotaUnavailable):
            await selector.reserve("acme", DAY, B, B, 1_000, 100, fail_closed=True)
        unchecked = await selector.reserve("acme", DAY, B, B, 1_000, 100)
        assert unchecked is not None and unchecked.unchecked

    run(scenario())


def test_peek_says_what_select_would_without_holding_or_marking() -> None:
    store, clock = CountingStore(), Clock()
    selector = QuotaSelector(leases(store, clock))
    quota_of = {A: (A, 1_000), B: (B, 1_000)}.get

    async def peek() -> Any:
        return await selector.peek("acme", DAY, (A, B), quota_of)

    async def scenario() -> None:
        assert ((await peek()).model, (await peek()).fallback) == (A, False)
        store.committed[("acme", DAY, A)] = 950
        selector.leases._views.clear()  # noqa: SLF001 — as after the next read
        tight = await peek()
        assert (tight.model, tight.mode, tight.grant) == (A, Mode.TIGHT, None)
        assert "claim_lease" not in store.calls  # nothing held
        store.committed[("acme", DAY, A)] = 1_000
        selector.leases._views.clear()  # noqa: SLF001
        fallen = await peek()
        assert (fallen.model, fallen.fallback) == (B, True)
        assert ("acme", DAY) not in store.exhausted  # marking A is select's job
        store.committed[("acme", DAY, B)] = 1_000
        selector.leases._views.clear()  # noqa: SLF001
        with pytest.raises(QuotaExhausted):
            await peek()

    run(scenario())


def test_peek_skips_a_model_select_marked_exhausted() -> None:
    store, clock = CountingStore(), Clock()
    store.exhausted[("acme", DAY)] = {A}
    selector = QuotaSelector(leases(store, clock))

    async def scenario() -> None:
        selection = await selector.peek("acme", DAY, (A, B, "amazon.titan-text-v1"), {A: (A, 1000), B: (B, 1000)}.get)
        assert (selection.model, selection.fallback, selection.mode) == (B, True, Mode.NORMAL)
        no_quota = await selector.peek("acme", DAY, (A, "amazon.titan-text-v1"), {A: (A, 1000)}.get)
        assert no_quota.model == "amazon.titan-text-v1"  # no quota: unlimited

    run(scenario())


def test_peek_passes_over_a_model_the_requests_worst_case_does_not_fit() -> None:
    store, clock = CountingStore(), Clock()
    store.committed[("acme", DAY, A)] = 900
    selector = QuotaSelector(leases(store, clock))
    quota_of = {A: (A, 1_000), B: (B, 1_000)}.get

    async def scenario() -> None:
        assert (await selector.peek("acme", DAY, (A, B), quota_of, lambda model: 100)).model == A
        moved = await selector.peek("acme", DAY, (A, B), quota_of, lambda model: 101)
        assert (moved.model, moved.fallback) == (B, True)
        assert "claim_lease" not in store.calls

    run(scenario())


def test_a_lowered_quota_holds_from_the_next_request_whatever_the_slice_held() -> None:
    """Issue #22 item 2: `quota set` lowers a quota while this replica holds a slice
    claimed under the old one. The free part of the slice goes back to the store and the
    next request is judged against the new quota, not served from the old slice."""
    store, clock = CountingStore(), Clock()
    allocator = leases(store, clock)

    async def scenario() -> None:
        allocator.settle(grant(await allocator.admit(KEY, 10_000_000, 100)), 60)
        assert store.budget("acme", DAY).model(A).leased > 1_000  # a slice of many requests
        assert await allocator.admit(KEY, 0, 100) == Refusal(exhausted=True)
        assert store.budget("acme", DAY).model(A).committed == 60  # the free slice went back
        assert allocator.exhausted(KEY)

    run(scenario())


def test_a_quota_lowered_below_the_slice_but_above_the_spend_still_admits() -> None:
    store, clock = CountingStore(), Clock()
    allocator = leases(store, clock)

    async def scenario() -> None:
        allocator.settle(grant(await allocator.admit(KEY, 10_000_000, 100)), 60)
        grant(await allocator.admit(KEY, 1_000, 100))
        assert store.budget("acme", DAY).model(A).committed <= 1_000

    run(scenario())


def test_a_request_that_takes_free_budget_while_a_claim_is_on_the_wire_is_not_counted_twice() -> None:
    """Found by the simulation (CI, 1 replica, no faults, +3 % over the quota): request A
    needs a claim; while the claim is on the wire, request B takes the free slice that A's
    claim was sized to top up. A must not be admitted on budget B already took."""
    store, clock = CountingStore(), Clock()
    allocator = leases(store, clock)

    async def scenario() -> None:
        first = grant(await allocator.admit(KEY, 1_000, 300))  # a TIGHT claim of 300
        allocator.settle(first, 0)  # 300 free in the slice
        needs_claim = asyncio.ensure_future(allocator.admit(KEY, 1_000, 500))  # claims 200 more
        await asyncio.sleep(0)  # A is on the wire
        fast = grant(await allocator.admit(KEY, 1_000, 300))  # B takes the 300 free at once
        result = await needs_claim
        admitted = fast.worst + (result.worst if isinstance(result, Grant) else 0)
        assert admitted <= 1_000
        held = store.budget("acme", DAY).model(A).committed
        assert held <= 1_000 and admitted <= held

    run(scenario())
