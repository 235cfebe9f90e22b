"""Budget leases: a daily quota that holds under any burst, on any number of replicas.

Why leases. The quota used to be enforced from cached reads of the store's spend
(NORMAL mode) and per-request reservations near the quota (TIGHT mode). A cached
read cannot see a burst that starts after it, so the bound depended on timing:
four replicas on the default settings spent 3.3 times a quota (issue #18). Here
no request is served on budget this replica does not hold, so the bound holds by
construction, whatever the timing, the number of replicas or the burst. A
conditional write per request would hold it too, with a store round-trip on every
request; a lease pays that round-trip once per slice (prior art for leased
capacity: youtube/doorman, a lease length plus a refresh interval).

How. Per (quota scope, UTC day, model) the store keeps `committed` = spent + Σ
leases (`metering/budget.py`):

* **Claim.** A replica (each worker process) takes a *slice* of what is left with
  one conditional write: `committed += n` only if `committed + n <= quota`, and
  the same `n` on its own lease, with an expiry (`lease_ttl`, 30 s by default).
* **Admit locally.** A request is admitted against the replica's free slice by its
  worst-case cost W: an upper bound of its input tokens (`adapters/input_bound.py`)
  plus its max output tokens, priced as the id sent. No store call while the slice
  covers it.
* **Settle.** When the request ends, the part of its cost the slice covers,
  r = min(c, W), leaves the slice; the usage event carries r and the lease's id, and
  the flush that stores the event moves r from the lease to spent (`committed`
  gains only c − r ≥ 0, the part the estimate missed) in the same transaction,
  exactly once. W − r goes back to the free slice at once. A request that fails
  upstream or whose client hangs up before the first byte costs 0 and so gives
  its whole W back; a cut stream settles its estimated usage.
* **Give back.** Free budget is given back when the slice has been idle (1 s near
  the quota, `lease_ttl`/2 far from it), on SIGTERM, and when the day is over. A
  slice still in use is renewed before it expires.
* **Expire.** A lease whose expiry has passed (a dead or partitioned replica) is
  reclaimed by the next replica that needs budget: its amount leaves `committed`.
  A replica stops using a slice `lease_ttl`/6 before its expiry, which also bounds
  the clock skew replicas may have. A settlement that lands after a reclaim (a
  journal replayed late) becomes an orphan lease, whose reclaim adds it back.

Slice size. With R = quota − committed left to claim, H live holders, `need` the
part of this request's W the free slice lacks, and `rate` the worst cost this
lease admitted per second since its last claim:

    slice = max(need, min(R / (4·(H + 1)), max(128·W, rate · 10 s)))

Far from the quota a slice covers at least 128 requests or 10 s of traffic (a few
store writes per thousand requests); near it the slice shrinks to the request's
own worst case, and the replica makes one claim per request (TIGHT mode, as the
per-request reservations were). Requests waiting on the same claim are claimed
for together.

The bound. Let q be the quota and, over the day's requests on the model, W_i the
worst case admitted and c_i the cost metered. With every replica alive and the
store reachable:

    spent ≤ q + Σ_i max(0, c_i − W_i)

Claims never push `committed` past q, every request's W is inside a claim, and
only the part of a cost beyond its W is added unchecked. Slice size, number of
replicas and timing do not appear: with estimates that hold, spent ≤ q. Beyond that:

* a replica that dies adds at most what it held for requests in flight and for
  usage not yet flushed (its journal's replay is counted when it lands, and once
  its leases expire that budget was given to others);
* a replica cut off from the store serves only its free slice, and only until
  `lease_ttl`·5/6 after its last claim or renewal; then `fail_closed: true` refuses
  (503) and the default, fail-open, serves unchecked: each such request adds its
  cost to the bound and is counted (`costkeeper_quota_unchecked_total`).

Under-use. A request whose W does not fit what is left goes to the next model (or
is refused) for itself only. The model is marked exhausted for the scope (sticky
until the UTC day ends) only when a request does not fit and the settled spend has
reached 99 % of the quota; then leases hold at most the other 1 %. So when a scope
falls back, less than 1 % of the quota is left, or less than the worst case of the
requests that keep not fitting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping

from metering.budget import LeaseRecord, LeaseStore, ModelBudget, ScopeBudget
from metering.events import utc_day
from metering.lease_slices import (
    EXHAUSTED_SHARE,
    MIN_SLICE_REQUESTS,
    RECHECK,
    TIGHT_IDLE,
    Grant,
    LeaseKey,
    LeaseSlice,
    Mode,
    Refusal,
    slice_size,
)

__all__ = ["MIN_SLICE_REQUESTS", "RECHECK", "BudgetLeases", "BudgetUnavailable", "Grant", "LeaseKey", "Mode", "Refusal",
           "slice_size"]

logger = logging.getLogger(__name__)

_CLAIM_ATTEMPTS = 4


class BudgetUnavailable(Exception):
    """The free slice does not cover the request and the store cannot be reached."""


class BudgetLeases:
    """This process's leases. `admit` and `settle` run on the hot path: `settle` never
    does I/O, `admit` only when the free slice does not cover the request."""

    def __init__(self, store: LeaseStore, *, ttl: float = 30.0, clock: Callable[[], float] = time.time,
                 process_id: str | None = None, on_write: Callable[[str], None] = lambda kind: None) -> None:
        if ttl <= 0:
            raise ValueError("lease ttl must be positive")
        self._store = store
        #: Told of every lease write (claim, renew, give_back, reclaim, exhausted): `make bench` counts them.
        self._on_write = on_write
        self._ttl = ttl
        self._clock = clock
        self._id = process_id or secrets.token_hex(6)
        self._generation = 0
        self._leases: dict[LeaseKey, LeaseSlice] = {}
        #: Every lease with something still to settle or flush, current or retired.
        self._by_holder: dict[str, LeaseSlice] = {}
        #: (scope, day) → the last read of the store, and when.
        self._views: dict[tuple[str, str], tuple[ScopeBudget, float]] = {}
        #: Keys this process treats as exhausted until the day ends (sticky).
        self._exhausted: set[LeaseKey] = set()
        self._keeper: asyncio.Task[None] | None = None

    @property
    def ttl(self) -> float:
        return self._ttl

    # -- admission (hot path) ------------------------------------------------

    async def admit(self, key: LeaseKey, quota: int, worst: int) -> Grant | Refusal:
        """Admit a request whose worst case is `worst` on `key`, whose quota is `quota`.
        Raises BudgetUnavailable when it needs the store and cannot reach it."""
        if key in self._exhausted:
            return Refusal(exhausted=True)
        worst = max(worst, 0)
        lease = self._current(key)
        now = self._clock()
        if lease.quota <= quota and lease.usable_free(now, self._ttl) >= worst:
            return self._take(lease, worst, now)
        waiting_on = lease
        waiting_on.waiting += worst
        try:
            async with waiting_on.lock:
                if key in self._exhausted:
                    return Refusal(exhausted=True)
                lease = self._current(key)  # the lease may have been replaced while waiting
                if lease.quota > quota:
                    lease = await self._lowered(lease, quota)
                now = self._clock()
                if lease.usable_free(now, self._ttl) >= worst:
                    return self._take(lease, worst, now)
                if lease is not waiting_on:
                    async with lease.lock:
                        return await self._claim(lease, quota, worst)
                return await self._claim(lease, quota, worst)
        finally:
            waiting_on.waiting -= worst

    def settle(self, grant: Grant, cost: int) -> int:
        """The request ended having cost `cost`: what its lease covers of it (the event's
        `reserved`), the rest of its worst case free again. Once per grant; no I/O."""
        lease = grant.lease
        if grant.settled or lease is None:
            return 0
        grant.settled = True
        reserved = min(max(cost, 0), grant.worst)
        lease.inflight -= grant.worst
        lease.consumed += reserved
        lease.unflushed += reserved
        lease.last_used = self._clock()
        if not lease.active and lease.retired and lease.free <= 0:
            self._by_holder.pop(lease.holder, None)
        return reserved

    def release(self, grant: Grant) -> None:
        """The request was not sent and will record no usage: its worst case is free again."""
        self.settle(grant, 0)

    def on_stored(self, settled: Mapping[tuple[str, str, str, str], int]) -> None:
        """The metering pipeline stored events: (scope, day, model, holder) → Σ reserved."""
        for (_, _, _, holder), reserved in settled.items():
            lease = self._by_holder.get(holder)
            if lease is not None:
                lease.unflushed -= reserved
                if lease.retired and not lease.active:
                    self._by_holder.pop(holder, None)

    # -- what the admin port shows -------------------------------------------

    def exhausted(self, key: LeaseKey) -> bool:
        return key in self._exhausted

    def forget_exhausted(self, model: str, scopes: Callable[[str], bool]) -> list[str]:
        """Drop the sticky exhausted marks of `model` in the scopes `scopes` accepts, and
        the cached reads of those scopes; the scopes whose mark was dropped."""
        dropped = [key for key in self._exhausted if key[2] == model and scopes(key[0])]
        for key in dropped:
            self._exhausted.discard(key)
        for view_key in [view_key for view_key in self._views if scopes(view_key[0])]:
            del self._views[view_key]
        return sorted({key[0] for key in dropped})

    def mode(self, key: LeaseKey) -> Mode:
        """The mode of this process's current lease on `key` (NORMAL without one)."""
        lease = self._leases.get(key)
        return lease.mode if lease is not None and not lease.retired else Mode.NORMAL

    def held(self) -> dict[LeaseKey, tuple[int, int]]:
        """key → (free, in flight) of this process's current leases."""
        return {key: (lease.free, lease.inflight) for key, lease in self._leases.items()}

    def busy(self, holder: str) -> int | None:
        """What lease `holder` of this process holds for requests in flight and usage not yet
        stored (None: not one of ours, or nothing left to settle)."""
        lease = self._by_holder.get(holder)
        return None if lease is None else lease.inflight + lease.unflushed

    def busy_holders(self) -> dict[str, int]:
        return {holder: lease.inflight + lease.unflushed for holder, lease in self._by_holder.items()}

    def view(self, scope: str, day: str) -> ScopeBudget | None:
        seen = self._views.get((scope, day))
        return seen[0] if seen else None

    async def look(self, scope: str, day: str, max_age: float = 1.0) -> ScopeBudget:
        """The scope's day as last read if that read is under `max_age` seconds old, else
        read now (read-only: nothing claimed). Bounded staleness: spend that no lease
        covers (a usage report, another replica's flush) shows within a second."""
        seen = self._views.get((scope, day))
        if seen is not None and self._clock() - seen[1] <= max_age:
            return seen[0]
        return await self._read(scope, day)

    def views(self) -> dict[tuple[str, str], ScopeBudget]:
        """(scope, day) → the store's budget as this process last read it."""
        return {key: seen[0] for key, seen in self._views.items()}

    # -- claims ----------------------------------------------------------------

    def _current(self, key: LeaseKey) -> LeaseSlice:
        lease = self._leases.get(key)
        if lease is None or lease.retired:
            self._generation += 1
            lease = self._leases[key] = LeaseSlice(key, f"{self._id}-{self._generation}")
            self._by_holder[lease.holder] = lease
        return lease

    def _take(self, lease: LeaseSlice, worst: int, now: float) -> Grant:
        lease.inflight += worst
        lease.admitted_since_claim += worst
        lease.last_used = now
        return Grant(lease.key, worst, lease.mode, lease)

    async def _claim(self, lease: LeaseSlice, quota: int, worst: int) -> Grant | Refusal:
        scope, day, model = lease.key
        fresh = False
        for _ in range(_CLAIM_ATTEMPTS):
            now = self._clock()
            if lease.usable_free(now, self._ttl) >= worst:
                return self._take(lease, worst, now)
            seen = self._views.get((scope, day))
            if seen is None:
                seen = (await self._read(scope, day), now)
                fresh = True
            budget = seen[0].model(model)
            expired = budget.expired(now)
            need = worst - lease.usable_free(now, self._ttl)
            remaining = budget.remaining(quota)
            if need > remaining or any(record.amount < 0 for record in expired.values()):
                if need > remaining and not fresh and now - seen[1] > RECHECK:
                    self._views.pop((scope, day), None)  # old news: read again before refusing
                    continue
                # Orphans are spend the counter lacks: count them before claiming anything.
                if expired and await self._reclaim(lease.key, expired):
                    self._views.pop((scope, day), None)
                    fresh = False
                    continue
                if need > remaining:
                    return await self._refuse(lease.key, seen[0], budget, quota)
            amount, tight = slice_size(need, lease.waiting - lease.usable_free(now, self._ttl), remaining,
                                       budget.holders(now, lease.holder), worst, lease.rate)
            expires_at = round(now + self._ttl, 3)
            self._on_write("claim")
            try:
                granted, after = await self._store.claim_lease(scope, day, model, lease.holder, amount, quota,
                                                               expires_at)
            except Exception as exc:
                raise BudgetUnavailable(f"could not claim quota budget for {scope} on {model}: {exc}") from exc
            self._views[(scope, day)] = (after, self._clock())
            fresh = True
            if granted:
                # Requests that found enough free budget took it while the claim was on the
                # wire: the top of the loop takes only if what is free still covers `worst`.
                self._note_claim(lease, amount, expires_at, tight, now, quota)
        now = self._clock()
        if lease.usable_free(now, self._ttl) >= worst:
            return self._take(lease, worst, now)
        return Refusal(exhausted=False)

    async def _lowered(self, lease: LeaseSlice, quota: int) -> LeaseSlice:
        """The quota was lowered (`quota set`, a reload) below the one `lease` was claimed
        under: its free budget goes back to the store first, so the lowering holds from the
        next request instead of once the old slice is spent. Returns the lease to claim on."""
        if lease.free > 0:
            try:
                await self._give_back(lease)
            except Exception as exc:
                raise BudgetUnavailable(f"could not give back the quota budget of {lease.key[0]}: {exc}") from exc
            self._views.pop(lease.key[:2], None)
        lease.quota = quota
        return self._current(lease.key)

    def _note_claim(self, lease: LeaseSlice, amount: int, expires_at: float, tight: bool, now: float, quota: int) -> None:
        if lease.last_claim_at:
            lease.rate = lease.admitted_since_claim / max(now - lease.last_claim_at, 0.05)
        lease.admitted_since_claim = 0
        lease.last_claim_at = now
        lease.claimed += amount
        lease.quota = quota
        lease.expires_at = expires_at
        lease.mode = Mode.TIGHT if tight else Mode.NORMAL

    async def _read(self, scope: str, day: str) -> ScopeBudget:
        try:
            budget = await self._store.read_budget(scope, day)
        except Exception as exc:
            raise BudgetUnavailable(f"could not read the quota budget of {scope}: {exc}") from exc
        self._views[(scope, day)] = (budget, self._clock())
        return budget

    async def _reclaim(self, key: LeaseKey, expired: Mapping[str, LeaseRecord]) -> bool:
        scope, day, model = key
        self._on_write("reclaim")
        try:
            return await self._store.reclaim_leases(scope, day, model, expired)
        except Exception as exc:
            raise BudgetUnavailable(f"could not reclaim expired leases of {scope}: {exc}") from exc

    async def _refuse(self, key: LeaseKey, budget: ScopeBudget, model_budget: ModelBudget, quota: int) -> Refusal:
        scope, day, model = key
        if model in budget.exhausted or model_budget.spent * 100 >= quota * (100 - round(EXHAUSTED_SHARE * 100)):
            if key not in self._exhausted:
                self._exhausted.add(key)
                logger.info("scope %s has spent its daily quota on %s; falling back for the rest of %s",
                            scope, model, day)
                if model not in budget.exhausted:
                    self._on_write("exhausted")
                    with contextlib.suppress(Exception):  # the next replica to be refused marks it
                        await self._store.mark_exhausted(scope, day, model)
            return Refusal(exhausted=True)
        return Refusal(exhausted=False)

    # -- upkeep: renew, give back, expire --------------------------------------

    async def start(self) -> None:
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep(), name="costkeeper-leases")

    async def close(self) -> None:
        """Stop the upkeep and give back every free slice (SIGTERM). Call after the
        metering pipeline has flushed, so that fully settled leases are removed."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        for lease in list(self._by_holder.values()):
            self._retire(lease)
            with contextlib.suppress(Exception):
                await self._give_back(lease)

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self._ttl / 10))
            try:
                await self.maintain()
            except Exception as exc:  # the store is unreachable: slices run out on their own
                logger.warning("lease upkeep failed: %s", exc)

    async def maintain(self) -> None:
        """One pass of upkeep over this process's leases, current and retired."""
        now = self._clock()
        today = utc_day(now)
        for lease in list(self._by_holder.values()):
            if lease.lock.locked():
                continue  # a claim is under way
            async with lease.lock:
                await self._upkeep(lease, now, today)
        self._forget_old_days(today)

    async def _upkeep(self, lease: LeaseSlice, now: float, today: str) -> None:
        if not lease.retired and now >= lease.deadline(self._ttl):
            self._retire(lease)  # not renewed in time: used no more; it expires in the store
        ended = lease.retired or lease.key[1] < today or lease.key in self._exhausted
        idle = now - lease.last_used
        if (lease.free > 0 and (ended or idle >= self._idle_limit(lease))) or (ended and not lease.active):
            if not await self._give_back(lease):
                return
        if lease.expires_at - now < self._ttl / 2 and (lease.active or (not ended and idle < self._ttl / 2)):
            await self._renew(lease, now)

    def _idle_limit(self, lease: LeaseSlice) -> float:
        return TIGHT_IDLE if lease.mode is Mode.TIGHT else self._ttl / 2

    async def _renew(self, lease: LeaseSlice, now: float) -> None:
        scope, day, model = lease.key
        expires_at = round(now + self._ttl, 3)
        self._on_write("renew")
        if await self._store.renew_lease(scope, day, model, lease.holder, 0, expires_at):
            lease.expires_at = expires_at
        else:
            self._lost(lease)

    async def _give_back(self, lease: LeaseSlice) -> bool:
        """Give back the free budget; a lease that holds nothing else is removed and retired.
        False when the lease is gone (or was dropped)."""
        scope, day, model = lease.key
        amount = max(lease.free, 0)
        drop = not lease.active
        # Off the slice before the write: no admission spends what is being given back, and
        # if the answer is lost the store merely keeps it until the lease expires.
        lease.claimed -= amount
        self._on_write("give_back")
        if not await self._store.renew_lease(scope, day, model, lease.holder, amount, None, drop=drop):
            self._lost(lease)
            return False
        if drop:
            self._retire(lease)
            return False
        return True

    def _retire(self, lease: LeaseSlice) -> None:
        lease.retired = True
        if self._leases.get(lease.key) is lease:
            del self._leases[lease.key]
        if not lease.active and lease.free <= 0:
            self._by_holder.pop(lease.holder, None)

    def _lost(self, lease: LeaseSlice) -> None:
        """The store no longer has the lease (reclaimed after its expiry): its free budget is
        gone; requests in flight settle into an orphan, which the next reclaim counts."""
        if not lease.retired:
            logger.warning("lease %s on %s was reclaimed before it was renewed", lease.holder, lease.key)
        lease.claimed -= max(lease.free, 0)
        self._retire(lease)

    def _forget_old_days(self, today: str) -> None:
        for scope_day in [k for k in self._views if k[1] < today]:
            del self._views[scope_day]
        self._exhausted = {key for key in self._exhausted if key[1] >= today}

