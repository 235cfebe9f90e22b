"""What a store keeps of a quota scope's daily budget, and the calls that change it.

Per (quota scope, UTC day, model) the store keeps one counter, `committed`, and
the budget leases (slices) replicas hold, each `(amount, expires_at)` under its
holder's id. Every change is one atomic write that keeps

    committed = spent + Σ lease amounts

true, whatever the order the writes land in (`metering/leases.py` explains the
design and the bound it gives):

| write | committed | lease of holder h |
|---|---|---|
| claim n (only if committed + n <= quota) | + n | + n, expiry set |
| a flushed event (cost c, reserved r from h's lease) | + (c − r) | − r |
| give back g (renew) | − g | − g, expiry set or kept |
| reclaim an expired lease | − amount | removed |

A settlement that lands after its lease was reclaimed leaves an *orphan*: a
lease with no expiry and a negative amount (the spend the reclaim did not know
of). Orphans count as expired, so the next reclaim adds that spend back to
`committed`.

Money is integer pico-USD, as everywhere in `metering/` (`metering/money.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

__all__ = ["LeaseRecord", "LeaseStore", "ModelBudget", "ScopeBudget"]


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """One holder's lease as the store has it."""

    amount: int
    #: Epoch seconds (the holder's clock when it claimed or renewed); None: an orphan.
    expires_at: float | None

    def expired(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at < now


def _no_leases() -> Mapping[str, LeaseRecord]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ModelBudget:
    """One (scope, day, model) as last read from the store."""

    committed: int = 0
    #: holder id → lease
    leases: Mapping[str, LeaseRecord] = field(default_factory=_no_leases)

    @property
    def leased(self) -> int:
        """Held by leases: in flight, settled but not yet flushed, or not used yet."""
        return sum(lease.amount for lease in self.leases.values())

    @property
    def spent(self) -> int:
        """Settled by flushed usage events."""
        return self.committed - self.leased

    def remaining(self, quota: int) -> int:
        """What a claim can still take."""
        return quota - self.committed

    def expired(self, now: float) -> dict[str, LeaseRecord]:
        return {holder: lease for holder, lease in self.leases.items() if lease.expired(now)}

    def holders(self, now: float, besides: str = "") -> int:
        """Live leases holding something, other than `besides`."""
        return sum(1 for holder, lease in self.leases.items()
                   if holder != besides and lease.amount > 0 and not lease.expired(now))


@dataclass(frozen=True, slots=True)
class ScopeBudget:
    """One read of a scope's day: every model's budget, and the models marked exhausted."""

    models: Mapping[str, ModelBudget] = field(default_factory=lambda: MappingProxyType({}))
    exhausted: frozenset[str] = frozenset()

    def model(self, model: str) -> ModelBudget:
        return self.models.get(model) or ModelBudget()


@runtime_checkable
class LeaseStore(Protocol):
    """Budget leases per (quota scope, UTC day, model); each call is one atomic write or read.

    A usage event's settlement (its `lease` and `reserved_pico_usd`) is applied by
    the store's `write_batch`, in the same transaction as the rest of the batch."""

    async def read_budget(self, scope: str, day: str) -> ScopeBudget:
        """The scope's day as the store has it now (one strongly consistent read)."""
        ...

    async def claim_lease(self, scope: str, day: str, model: str, holder: str, amount: int, quota: int,
                          expires_at: float) -> tuple[bool, ScopeBudget]:
        """If committed + amount <= quota: add `amount` to committed and to `holder`'s lease,
        set its expiry, and return (True, the budget after). Else change nothing and return
        (False, the budget as it was)."""
        ...

    async def renew_lease(self, scope: str, day: str, model: str, holder: str, give_back: int,
                          expires_at: float | None, *, drop: bool = False) -> bool:
        """Give back `give_back` (from committed and the lease) and, unless None, set the
        lease's expiry; with `drop`, remove the lease when `give_back` is all it holds.
        False (nothing changed) if the lease is gone (reclaimed)."""
        ...

    async def reclaim_leases(self, scope: str, day: str, model: str, expired: Mapping[str, LeaseRecord]) -> bool:
        """Remove these leases and take their amounts out of committed, only if each is still
        exactly as given (so a lease renewed or settled meanwhile is left alone)."""
        ...

    async def exhausted_models(self, scope: str, day: str) -> frozenset[str]:
        """Models marked exhausted for the scope and day (sticky fallback state)."""
        ...

    async def mark_exhausted(self, scope: str, day: str, model: str) -> None:
        """Idempotent."""
        ...
