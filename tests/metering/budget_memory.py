"""The LeaseStore contract in memory: each call applies atomically at one instant (no
await inside), which the allocator's simulation (test_lease_simulation.py) needs to be
deterministic. The same contract suite runs on it, on SQLite and on DynamoDB Local
(test_budget_contract.py), so it keeps their semantics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from metering.aggregate import Aggregate
from metering.budget import LeaseRecord, LeaseStore, ModelBudget, ScopeBudget
from metering.events import UsageEvent

Key = tuple[str, str, str]


class MemoryBudgetStore:
    def __init__(self) -> None:
        self.committed: dict[Key, int] = {}
        self.leases: dict[Key, dict[str, LeaseRecord]] = {}
        self.exhausted: dict[tuple[str, str], set[str]] = {}
        self.batches: set[str] = set()
        self.request_ids: set[str] = set()

    def budget(self, scope: str, day: str) -> ScopeBudget:
        models = {model for (s, d, model) in self.committed.keys() | self.leases.keys() if (s, d) == (scope, day)}
        return ScopeBudget(
            models={model: ModelBudget(self.committed.get((scope, day, model), 0),
                                       dict(self.leases.get((scope, day, model), {}))) for model in models},
            exhausted=frozenset(self.exhausted.get((scope, day), set())),
        )

    async def read_budget(self, scope: str, day: str) -> ScopeBudget:
        return self.budget(scope, day)

    async def claim_lease(self, scope: str, day: str, model: str, holder: str, amount: int, quota: int,
                          expires_at: float) -> tuple[bool, ScopeBudget]:
        key = (scope, day, model)
        if self.committed.get(key, 0) + amount > quota:
            return False, self.budget(scope, day)
        self.committed[key] = self.committed.get(key, 0) + amount
        leases = self.leases.setdefault(key, {})
        held = leases.get(holder)
        leases[holder] = LeaseRecord((held.amount if held else 0) + amount, expires_at)
        return True, self.budget(scope, day)

    async def renew_lease(self, scope: str, day: str, model: str, holder: str, give_back: int,
                          expires_at: float | None, *, drop: bool = False) -> bool:
        key = (scope, day, model)
        held = self.leases.get(key, {}).get(holder)
        if held is None:
            return False
        self.committed[key] = self.committed.get(key, 0) - give_back
        if drop and held.amount == give_back:
            del self.leases[key][holder]
            return True
        self.leases[key][holder] = LeaseRecord(held.amount - give_back,
                                               held.expires_at if expires_at is None else expires_at)
        return True

    async def reclaim_leases(self, scope: str, day: str, model: str, expired: Mapping[str, LeaseRecord]) -> bool:
        key = (scope, day, model)
        leases = self.leases.get(key, {})
        if any(leases.get(holder) != lease for holder, lease in expired.items()):
            return False
        for holder, lease in expired.items():
            del leases[holder]
            self.committed[key] = self.committed.get(key, 0) - lease.amount
        return True

    async def exhausted_models(self, scope: str, day: str) -> frozenset[str]:
        return frozenset(self.exhausted.get((scope, day), set()))

    async def mark_exhausted(self, scope: str, day: str, model: str) -> None:
        self.exhausted.setdefault((scope, day), set()).add(model)

    async def write_batch(self, batch_id: str, events: Sequence[UsageEvent]) -> bool:
        """Only what the quota side of a flush does: committed += cost − reserved, each
        event's lease −= reserved (an orphan when the lease is gone). Once per batch id."""
        if batch_id in self.batches:
            return False
        self.batches.add(batch_id)
        fresh = [event for event in events if event.request_id not in self.request_ids]
        self.request_ids.update(event.request_id for event in fresh)
        aggregate = Aggregate(fresh)
        for key, delta in aggregate.committed.items():
            self.committed[key] = self.committed.get(key, 0) + delta
        for (scope, day, model, holder), reserved in aggregate.settled.items():
            if not reserved:
                continue
            leases = self.leases.setdefault((scope, day, model), {})
            held = leases.get(holder)
            leases[holder] = LeaseRecord((held.amount if held else 0) - reserved, held.expires_at if held else None)
        return True


async def committed_spend(store: LeaseStore, scope: str, day: str) -> dict[str, int]:
    """model → committed (spent + leased) of `scope` on `day`, as a store has it."""
    return {model: budget.committed for model, budget in (await store.read_budget(scope, day)).models.items()}


async def reserve(store: LeaseStore, scope: str, day: str, model: str, amount: int, quota: int,
                  holder: str = "test-holder") -> bool:
    """Claim `amount` on `holder`'s lease, as admission does when its slice lacks it."""
    granted, _ = await store.claim_lease(scope, day, model, holder, amount, quota, 4_102_444_800.0)  # 2100
    return granted
