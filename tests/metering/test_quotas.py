"""Selection: the first model of the chain under its quota, NORMAL and TIGHT modes, stickiness."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from metering.events import utc_day
from metering.quotas import Mode, QuotaExhausted, QuotaSelector

NOW = 1_795_000_000.0  # 2026-11-18
DAY = utc_day(NOW)
A, B, C = "amazon.nova-pro-v1:0", "amazon.nova-2-lite-v1:0", "amazon.nova-micro-v1:0"


class MemoryQuotaStore:
    """The QuotaStore contract in memory (atomic by construction: no awaits inside)."""

    def __init__(self) -> None:
        self.committed: dict[tuple[str, str, str], int] = {}
        self.exhausted: dict[tuple[str, str], set[str]] = {}
        self.reads = 0

    async def committed_spend(self, scope: str, day: str) -> dict[str, int]:
        self.reads += 1
        return {m: v for (s, d, m), v in self.committed.items() if (s, d) == (scope, day)}

    async def reserve(self, scope: str, day: str, model: str, amount: int, quota: int) -> bool:
        current = self.committed.get((scope, day, model), 0)
        if current + amount > quota:
            return False
        self.committed[(scope, day, model)] = current + amount
        return True

    async def release(self, scope: str, day: str, model: str, amount: int) -> None:
        self.committed[(scope, day, model)] = self.committed.get((scope, day, model), 0) - amount

    async def exhausted_models(self, scope: str, day: str) -> frozenset[str]:
        return frozenset(self.exhausted.get((scope, day), set()))

    async def mark_exhausted(self, scope: str, day: str, model: str) -> None:
        self.exhausted.setdefault((scope, day), set()).add(model)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def _selector(store: MemoryQuotaStore, clock: Clock, **kwargs: Any) -> QuotaSelector:
    return QuotaSelector(store, clock=clock, **kwargs)


def _quota(table: Mapping[str, int]) -> Callable[[str], int | None]:
    return table.get


def _select(selector: QuotaSelector, chain: tuple[str, ...], quotas: Mapping[str, int], worst: int = 10) -> Any:
    return asyncio.run(selector.select("acme", chain, _quota(quotas), lambda model: worst))


def test_first_model_under_quota_in_normal_mode() -> None:
    store, clock = MemoryQuotaStore(), Clock()
    selection = _select(_selector(store, clock), (A, B, C), {A: 1000, B: 1000})
    assert (selection.model, selection.fallback, selection.mode, selection.reserved) == (A, False, Mode.NORMAL, 0)


def test_exhausted_model_falls_back_and_stays_fallen_back() -> None:
    store, clock = MemoryQuotaStore(), Clock()
    store.committed[("acme", DAY, A)] = 1000
    selector = _selector(store, clock)
    selection = _select(selector, (A, B), {A: 1000, B: 1000})
    assert (selection.model, selection.fallback) == (B, True)
    assert A in store.exhausted[("acme", DAY)]  # shared with other replicas
    # Sticky: even if A's spend drops (e.g. a reservation is released), A stays skipped today.
    store.committed[("acme", DAY, A)] = 0
    assert _select(_selector(store, clock), (A, B), {A: 1000, B: 1000}).model == B
    # A new UTC day starts clean.
    clock.now += 86_400
    assert _select(selector, (A, B), {A: 1000, B: 1000}).model == A


def test_tight_mode_reserves_the_worst_case_and_refuses_what_cannot_fit() -> None:
    store, clock = MemoryQuotaStore(), Clock()
    store.committed[("acme", DAY, A)] = 850  # 85 % of the quota: TIGHT
    selector = _selector(store, clock, tight_threshold=0.8)
    first = _select(selector, (A, B), {A: 1000, B: 1000}, worst=100)
    assert (first.model, first.mode, first.reserved, first.use_ratio) == (A, Mode.TIGHT, 100, 0.85)
    assert store.committed[("acme", DAY, A)] == 950
    # 950 + 100 > 1000: the worst case no longer fits, so A is exhausted and B serves.
    second = _select(selector, (A, B), {A: 1000, B: 1000}, worst=100)
    assert (second.model, second.fallback, second.mode) == (B, True, Mode.NORMAL)
    asyncio.run(selector.release("acme", first))
    assert store.committed[("acme", DAY, A)] == 850


def test_all_exhausted_raises_with_scope_and_quotas() -> None:
    store, clock = MemoryQuotaStore(), Clock()
    usd = 10**12  # pico-USD
    store.committed[("acme", DAY, A)] = usd
    store.committed[("acme", DAY, B)] = 2 * usd + 1
    pattern = r"scope 'acme'.*amazon.nova-pro-v1:0 \(\$1/day\), amazon.nova-2-lite-v1:0 \(\$2.000000000001/day\)"
    with pytest.raises(QuotaExhausted, match=pattern) as raised:
        _select(_selector(store, clock), (A, B), {A: usd, B: 2 * usd + 1})
    assert raised.value.scope == "acme"


def test_model_without_quota_is_unlimited() -> None:
    store, clock = MemoryQuotaStore(), Clock()
    store.committed[("acme", DAY, A)] = 5000
    selection = _select(_selector(store, clock), (A, C), {A: 1000})
    assert (selection.model, selection.mode) == (C, Mode.NORMAL)


def test_own_spend_counts_while_the_cached_read_ages() -> None:
    store, clock = MemoryQuotaStore(), Clock()
    selector = _selector(store, clock, normal_ttl=60)
    assert _select(selector, (A, B), {A: 1000, B: 1000}).model == A  # caches committed = 0
    selector.note_spend("acme", DAY, A, 600)
    store.committed[("acme", DAY, A)] = 600  # the flush landed, but the cache still says 0
    selector.note_spend("acme", DAY, A, 400)  # not flushed yet
    assert _select(selector, (A, B), {A: 1000, B: 1000}).model == B


def test_normal_reads_come_from_the_cache_and_refresh_in_the_background() -> None:
    store, clock = MemoryQuotaStore(), Clock()
    selector = _selector(store, clock, normal_ttl=2.0)

    async def scenario() -> None:
        for _ in range(50):
            await selector.select("acme", (A,), _quota({A: 1000}), lambda m: 1)
        assert store.reads == 1  # one cold read, then the cache
        store.committed[("acme", DAY, A)] = 1000
        clock.now += 3  # stale: this request still uses the old value, a refresh starts
        assert (await selector.select("acme", (A, B), _quota({A: 1000}), lambda m: 1)).model == A
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert store.reads == 2
        assert (await selector.select("acme", (A, B), _quota({A: 1000}), lambda m: 1)).model == B

    asyncio.run(scenario())


async def _reads(selector: QuotaSelector, store: MemoryQuotaStore, clock: Clock,
                 committed: list[int], own_step: int = 0) -> None:
    """One read a second, the store showing `committed` in turn; this replica notes
    `own_step` of its own spend after each read (and its flush lands in the store)."""
    for spent in committed:
        store.committed[("acme", DAY, A)] = spent
        await selector._read(("acme", DAY))  # noqa: SLF001 — what the background refresh does
        selector.note_spend("acme", DAY, A, own_step)
        clock.now += 1.0


def test_the_other_replicas_pace_is_projected_over_the_stale_window() -> None:
    """The others add 300/s: a read 1 s old plus their 1 s flush lag hides ~600 of it."""
    for history, expected in (([0, 100, 200], Mode.NORMAL), ([0, 300, 600], Mode.TIGHT)):
        store, clock = MemoryQuotaStore(), Clock()
        selector = _selector(store, clock, normal_ttl=10.0, tight_threshold=0.8, flush_lag=1.0)

        async def scenario() -> Mode:
            await _reads(selector, store, clock, history)  # noqa: B023 — awaited at once
            return (await selector.select("acme", (A,), _quota({A: 1000}), lambda m: 1)).mode  # noqa: B023

        # 200 + 100/s × 2 s = 400 < 800: NORMAL.  600 + 300/s × 2 s = 1200 ≥ 800: TIGHT
        # (without the projection, 600 < 800 would stay NORMAL and let the fleet run past).
        assert asyncio.run(scenario()) == expected


def test_the_projected_pace_ages_with_the_read() -> None:
    store, clock = MemoryQuotaStore(), Clock()
    selector = _selector(store, clock, normal_ttl=100.0, tight_threshold=0.8, flush_lag=1.0)

    async def scenario() -> list[Mode]:
        await _reads(selector, store, clock, [0, 100, 200])  # 100/s; the last read is 1 s old
        modes = []
        for _ in range(5):  # unseen: 200, 300, 400, 500, 600 → 400 … 800
            modes.append((await selector.select("acme", (A,), _quota({A: 1000}), lambda m: 1)).mode)
            clock.now += 1.0
        return modes

    assert asyncio.run(scenario()) == [Mode.NORMAL] * 4 + [Mode.TIGHT]


def test_own_spend_is_not_projected_as_the_others_pace() -> None:
    store, clock = MemoryQuotaStore(), Clock()
    selector = _selector(store, clock, normal_ttl=10.0, tight_threshold=0.8, flush_lag=1.0)

    async def scenario() -> Mode:
        # All the growth is this replica's own (200 a second, flushed): the others' pace is 0.
        await _reads(selector, store, clock, [0, 200, 400], own_step=200)
        # Spent: 400 read + 200 noted since = 600 < 800. Counting the own pace again
        # (200/s × 2 s) would make it 1000: TIGHT for nothing.
        return (await selector.select("acme", (A,), _quota({A: 1000}), lambda m: 1)).mode

    assert asyncio.run(scenario()) == Mode.NORMAL


def test_concurrent_tight_reservations_never_exceed_the_quota() -> None:
    store, clock = MemoryQuotaStore(), Clock()
    store.committed[("acme", DAY, A)] = 800
    selectors = [_selector(store, clock) for _ in range(4)]  # four replicas, one store

    async def scenario() -> list[Any]:
        async def one(i: int) -> Any:
            return await selectors[i % 4].select("acme", (A, B), _quota({A: 1000, B: 10**9}), lambda m: 7)
        return await asyncio.gather(*(one(i) for i in range(100)))

    results = asyncio.run(scenario())
    on_a = [r for r in results if r.model == A]
    assert store.committed[("acme", DAY, A)] == 800 + 7 * len(on_a) <= 1000
    assert len(on_a) == 200 // 7


def _peek(selector: QuotaSelector, chain: tuple[str, ...], quotas: Mapping[str, int]) -> Any:
    return asyncio.run(selector.peek("acme", chain, _quota(quotas)))


def test_peek_says_what_select_would_without_reserving_or_marking() -> None:
    store, clock = MemoryQuotaStore(), Clock()
    quotas = {A: 1000, B: 1000}

    def peek() -> Any:  # a fresh selector each time: no cached read in the way
        return _peek(_selector(store, clock, tight_threshold=0.8), (A, B), quotas)

    assert (peek().model, peek().mode) == (A, Mode.NORMAL)
    store.committed[("acme", DAY, A)] = 850
    tight = peek()
    assert (tight.model, tight.fallback, tight.mode, tight.reserved) == (A, False, Mode.TIGHT, 0)
    assert store.committed[("acme", DAY, A)] == 850  # nothing reserved
    store.committed[("acme", DAY, A)] = 1000
    fallen = peek()
    assert (fallen.model, fallen.fallback) == (B, True)
    assert ("acme", DAY) not in store.exhausted  # marking A is select's job
    store.committed[("acme", DAY, B)] = 1000
    with pytest.raises(QuotaExhausted):
        peek()


def test_peek_skips_a_model_select_marked_exhausted() -> None:
    store, clock = MemoryQuotaStore(), Clock()
    store.exhausted[("acme", DAY)] = {A}
    selection = _peek(_selector(store, clock), (A, B, C), {A: 1000, B: 1000})
    assert (selection.model, selection.fallback, selection.mode) == (B, True, Mode.NORMAL)
    assert _peek(_selector(store, clock), (A, C), {A: 1000}).model == C  # no quota: unlimited
