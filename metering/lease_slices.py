"""What one budget lease holds, and how big a slice to claim (metering/leases.py has the design).

Why apart from the allocator: these are the data and the sizing rule, with no I/O and
no locking; the allocator (`BudgetLeases`) decides when to claim, renew and give back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["EXHAUSTED_SHARE", "MIN_SLICE_REQUESTS", "RECHECK", "SLICE_SECONDS", "SPREAD", "TIGHT_IDLE", "Grant",
           "LeaseKey", "LeaseSlice", "Mode", "Refusal", "slice_size"]

#: (quota scope, UTC day, model the quota is kept under)
LeaseKey = tuple[str, str, str]

#: A claim takes at most 1/SPREAD of what is left per holder (this one included).
SPREAD = 4
#: Far from the quota a slice covers at least this many worst cases of the request…
MIN_SLICE_REQUESTS = 128
#: …or this many seconds of the lease's recent worst-case rate.
SLICE_SECONDS = 10.0
#: The model is exhausted when a request does not fit and spent ≥ (1 − this) × quota.
EXHAUSTED_SHARE = 0.01
#: A view of the store that says "does not fit" is trusted this long (seconds).
RECHECK = 0.5
#: A TIGHT (near the quota) slice idle this long gives its free budget back (seconds).
TIGHT_IDLE = 1.0


class Mode(StrEnum):
    #: Admitted from a slice sized for many requests (no store call per request).
    NORMAL = "NORMAL"
    #: Near the quota: the slice was claimed for this request's worst case.
    TIGHT = "TIGHT"


@dataclass(frozen=True, slots=True)
class Refusal:
    """The request's worst case does not fit what is left of the model's quota."""

    #: True when the model is exhausted for the scope (sticky); False: for this request only.
    exhausted: bool


def slice_size(need: int, want: int, remaining: int, holders: int, worst: int, rate: float) -> tuple[int, bool]:
    """How much to claim, and whether that is TIGHT (just the requests at hand).

    `need`: what this request lacks; `want`: what every request waiting on this claim
    lacks; `remaining`: what is left to claim; `holders`: other live leases."""
    share = remaining // (SPREAD * (holders + 1))
    target = max(MIN_SLICE_REQUESTS * worst, int(rate * SLICE_SECONDS))
    ahead = min(share, target)
    amount = max(need, min(want, remaining), ahead)
    return min(max(amount, need), max(remaining, need)), ahead <= need


class LeaseSlice:
    """One lease generation of this process on one key (a lost lease gets a new holder id)."""

    __slots__ = ("key", "holder", "claimed", "quota", "consumed", "inflight", "unflushed", "expires_at", "mode",
                 "last_used", "last_claim_at", "admitted_since_claim", "rate", "waiting", "lock", "retired")

    def __init__(self, key: LeaseKey, holder: str) -> None:
        self.key = key
        self.holder = holder
        #: Claimed minus given back.
        self.claimed = 0
        #: The quota of the last claim: a slice claimed under a larger one is not used.
        self.quota = 0
        #: Σ r of settled requests (r leaves the lease when its event is flushed).
        self.consumed = 0
        #: Σ W of admitted requests not settled yet.
        self.inflight = 0
        #: Σ r settled whose events are not in the store yet.
        self.unflushed = 0
        self.expires_at = 0.0
        self.mode = Mode.NORMAL
        self.last_used = 0.0
        self.last_claim_at = 0.0
        self.admitted_since_claim = 0
        self.rate = 0.0
        #: Σ W of the requests waiting for a claim on this lease.
        self.waiting = 0
        self.lock = asyncio.Lock()
        #: No longer used for admissions (lost, lapsed or given back); settles only.
        self.retired = False

    @property
    def free(self) -> int:
        return self.claimed - self.consumed - self.inflight

    def deadline(self, ttl: float) -> float:
        """After this, the slice is not used: its expiry minus the margin for clock skew."""
        return self.expires_at - ttl / 6

    def usable_free(self, now: float, ttl: float) -> int:
        return self.free if not self.retired and now < self.deadline(ttl) else 0

    @property
    def active(self) -> bool:
        """Holds budget for requests in flight or usage not yet flushed."""
        return self.inflight > 0 or self.unflushed > 0


@dataclass(slots=True)
class Grant:
    """A request's worst case, admitted against a lease (or unchecked: `lease` is None)."""

    key: LeaseKey
    worst: int
    mode: Mode
    lease: LeaseSlice | None = None
    settled: bool = False

    @property
    def holder(self) -> str:
        return self.lease.holder if self.lease is not None else ""
