"""Choosing the model for a request: the first of its chain still under its daily quota.

Spend per (quota scope, model, UTC day) is the store's committed spend (spent +
outstanding reservations, all replicas) as last read, plus what this replica
itself committed since that read (`note_spend`), so a replica never forgets its
own spend while a cached read ages, whenever its flushes land. Two modes per model:

* NORMAL, below `tight_threshold` of the quota: the committed spend comes from a
  local TTL cache refreshed in the background (no store round-trip on the hot
  path once warm). What the other replicas spent since the read (its age plus
  their flush interval) is projected from the rate their spend grew at between
  reads: without it, a fast enough fleet crosses from below the threshold to
  past the quota inside one stale window (tests/e2e/test_replicas.py overran by
  12 % once the proxy got four times faster).
* TIGHT, from the threshold on: the worst-case cost of the request (input
  estimate + max output tokens) is reserved atomically in the store before
  forwarding; the reservation is settled when the request's usage is flushed.
  A reservation that does not fit means the model is exhausted for the scope.

Sticky: once a model is exhausted for a scope it stays skipped until the UTC day
ends (no flapping between models, prompt caches stay warm on the fallback).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from cachetools import TTLCache

from metering.events import utc_day
from metering.money import format_usd

__all__ = ["Mode", "Selection", "QuotaExhausted", "QuotaStore", "QuotaSelector"]

logger = logging.getLogger(__name__)


class QuotaStore(Protocol):
    async def committed_spend(self, scope: str, day: str) -> dict[str, int]: ...
    async def reserve(self, scope: str, day: str, model: str, amount: int, quota: int) -> bool: ...
    async def release(self, scope: str, day: str, model: str, amount: int) -> None: ...
    async def exhausted_models(self, scope: str, day: str) -> frozenset[str]: ...
    async def mark_exhausted(self, scope: str, day: str, model: str) -> None: ...


class Mode(StrEnum):
    NORMAL = "NORMAL"
    TIGHT = "TIGHT"


@dataclass(frozen=True, slots=True)
class Selection:
    model: str
    #: True when the model is not the first the request's chain offered.
    fallback: bool
    mode: Mode
    #: pico-USD reserved in TIGHT mode (settled when the usage is flushed).
    reserved: int = 0
    day: str = ""
    #: Spend / quota of the chosen model as seen when choosing (None without a quota).
    use_ratio: float | None = None


class QuotaExhausted(Exception):
    """Every model of the chain is at its daily quota for the scope."""

    def __init__(self, scope: str, chain: Sequence[str], quotas: Mapping[str, int]) -> None:
        self.scope = scope
        self.chain = tuple(chain)
        self.quotas = dict(quotas)
        # Each quota as it was configured, exactly: "$50/day", "$0.000005/day".
        spent = ", ".join(f"{m} (${format_usd(quotas[m]).rstrip('0').rstrip('.')}/day)" for m in chain if m in quotas)
        super().__init__(
            f"Daily quota exhausted for scope '{scope}' on every model of its chain: {spent}. "
            f"Quotas reset at 00:00 UTC."
        )


def _ratio(spent: int, quota: int) -> float:
    return spent / quota if quota else 1.0


#: How fast a projected rate forgets a burst (seconds): slow, so a lull between two
#: of the other replicas' flushes does not read as the end of their traffic.
_RATE_MEMORY = 10.0


@dataclass(slots=True)
class _Read:
    """One read of a scope's committed spend, and what it tells about the others' pace."""

    at: float
    #: model → committed spend (all replicas, as the store had it)
    committed: dict[str, int]
    #: model → this replica's own noted spend when the read started
    local_then: dict[str, int]
    #: model → pico-USD per second the other replicas added, recent peak (decaying)
    others_rate: dict[str, float]


def _others_rate(previous: _Read, current: _Read) -> dict[str, float]:
    """Growth of the committed spend between two reads, less this replica's own part:
    the new rate, or the previous one decayed if that is higher (conservative)."""
    elapsed = current.at - previous.at
    if elapsed <= 0:
        return dict(previous.others_rate)
    decay = math.exp(-elapsed / _RATE_MEMORY)
    rates: dict[str, float] = {}
    for model in current.committed.keys() | previous.others_rate.keys():
        grown = current.committed.get(model, 0) - previous.committed.get(model, 0)
        own = current.local_then.get(model, 0) - previous.local_then.get(model, 0)
        rate = max(0.0, (grown - own) / elapsed, previous.others_rate.get(model, 0.0) * decay)
        if rate > 0:
            rates[model] = rate
    return rates


class QuotaSelector:
    def __init__(
        self,
        store: QuotaStore,
        *,
        tight_threshold: float = 0.8,
        normal_ttl: float = 2.0,
        tight_ttl: float = 0.25,
        flush_lag: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        #: (scope, day) → model → pico-USD this replica committed (cost − reserved), cumulative.
        self._local: dict[tuple[str, str], dict[str, int]] = {}
        self._threshold = tight_threshold
        self._tight_ttl = tight_ttl
        self._clock = clock
        #: How long another replica may hold spend before the store sees it (its flush interval).
        self._flush_lag = flush_lag
        self._spend: TTLCache[tuple[str, str], _Read] = TTLCache(
            maxsize=100_000, ttl=max(normal_ttl, tight_ttl) * 4
        )
        self._normal_ttl = normal_ttl
        self._exhausted: TTLCache[tuple[str, str], frozenset[str]] = TTLCache(maxsize=100_000, ttl=normal_ttl)
        self._local_exhausted: dict[tuple[str, str], set[str]] = {}
        self._refreshing: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._releasing: set[asyncio.Task[None]] = set()

    async def select(
        self,
        scope: str,
        chain: Sequence[str],
        quota_of: Callable[[str], int | None],
        worst_case: Callable[[str], int],
    ) -> Selection:
        """The first model of `chain` under its quota; raise QuotaExhausted if none is.

        `worst_case(model)` is the most the request can cost on that model (pico-USD).
        """
        day = utc_day(self._clock())
        exhausted = await self._exhausted_for(scope, day)
        quotas: dict[str, int] = {}
        for index, model in enumerate(chain):
            quota = quota_of(model)
            if quota is None:
                return Selection(model, index > 0, Mode.NORMAL, 0, day)
            quotas[model] = quota
            if model in exhausted:
                continue
            spent = await self._spent(scope, day, model, fresh=False)
            if spent + self._unseen(scope, day, model) < self._threshold * quota:
                return Selection(model, index > 0, Mode.NORMAL, 0, day, _ratio(spent, quota))
            spent = await self._spent(scope, day, model, fresh=True)
            amount = worst_case(model)
            if spent + amount <= quota and await self._store.reserve(scope, day, model, amount, quota):
                return Selection(model, index > 0, Mode.TIGHT, amount, day, _ratio(spent, quota))
            await self._mark_exhausted(scope, day, model)
        raise QuotaExhausted(scope, chain, quotas)

    async def reserve(self, scope: str, model: str, amount: int, quota: int) -> Selection | None:
        """Reserve `amount` in the store whatever the mode, or None if it does not fit.

        For a request whose cost is known before it runs and may be a large share of
        the quota (an async video job): NORMAL mode's cached read would let one such
        request overrun the quota. One that does not fit is refused for itself only;
        the model is not marked exhausted, a cheaper request may still fit."""
        day = utc_day(self._clock())
        if model in await self._exhausted_for(scope, day):
            return None
        spent = await self._spent(scope, day, model, fresh=True)
        if spent + amount > quota or not await self._store.reserve(scope, day, model, amount, quota):
            return None
        mode = Mode.TIGHT if spent >= self._threshold * quota else Mode.NORMAL
        return Selection(model, False, mode, amount, day, _ratio(spent, quota))

    async def release(self, scope: str, selection: Selection) -> None:
        """Give back a reservation whose request will produce no usage event."""
        if selection.reserved:
            await self._store.release(scope, selection.day, selection.model, selection.reserved)

    def note_spend(self, scope: str, day: str, model: str, delta: int) -> None:
        """This replica committed `delta` pico-USD (a request's cost minus its reservation)."""
        local = self._local.setdefault((scope, day), {})
        local[model] = local.get(model, 0) + delta

    def release_later(self, scope: str, selection: Selection) -> None:
        """`release` from code that cannot await (the task is kept until done)."""
        if selection.reserved:
            task = asyncio.create_task(self.release(scope, selection))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

    async def _spent(self, scope: str, day: str, model: str, *, fresh: bool) -> int:
        key = (scope, day)
        cached = self._spend.get(key)
        if cached is None:
            cached = await self._read(key)
        else:
            age = self._clock() - cached.at
            if fresh and age > self._tight_ttl:
                cached = await self._read(key)
            elif age > self._normal_ttl:
                self._refresh_in_background(key)
        local_now = self._local.get(key, {}).get(model, 0)
        return cached.committed.get(model, 0) + local_now - cached.local_then.get(model, 0)

    def _unseen(self, scope: str, day: str, model: str) -> int:
        """What the other replicas likely spent on `model` that the last read cannot show."""
        cached = self._spend.get((scope, day))
        if cached is None:
            return 0
        horizon = max(0.0, self._clock() - cached.at) + self._flush_lag
        return round(cached.others_rate.get(model, 0.0) * horizon)

    async def _read(self, key: tuple[str, str]) -> _Read:
        # Snapshot the local totals first: spend noted while the read is in flight is
        # then counted twice at worst (conservative), never missed.
        local_then = dict(self._local.get(key, {}))
        committed = await self._store.committed_spend(*key)
        entry = _Read(self._clock(), committed, local_then, {})
        previous = self._spend.get(key)
        if previous is not None:
            entry.others_rate.update(_others_rate(previous, entry))
        self._spend[key] = entry
        return entry

    def _refresh_in_background(self, key: tuple[str, str]) -> None:
        if key in self._refreshing:
            return

        async def refresh() -> None:
            try:
                await self._read(key)
            except Exception as exc:  # a failed refresh keeps the last value; the next one retries
                logger.warning("could not refresh spend for %s: %s", key[0], exc)
            finally:
                self._refreshing.pop(key, None)

        self._refreshing[key] = asyncio.create_task(refresh())

    async def _exhausted_for(self, scope: str, day: str) -> frozenset[str]:
        key = (scope, day)
        shared = self._exhausted.get(key)
        if shared is None:
            shared = await self._store.exhausted_models(scope, day)
            self._exhausted[key] = shared
            # A new day: forget the previous days' local marks.
            for old in [k for k in self._local_exhausted if k[1] != day]:
                del self._local_exhausted[old]
            for old in [k for k in self._local if k[1] != day]:
                del self._local[old]
        return shared | self._local_exhausted.get(key, set())

    def forget_exhausted(self, model: str, scopes: Callable[[str], bool]) -> list[str]:
        """`model`'s quota grew for the scopes `scopes` accepts: forget this replica's
        exhausted marks of it there, and the cached shared ones (re-read at the next
        request). The scopes whose local mark was dropped, for the caller to clear the
        store's mark too (metering/overrides.py `clear_exhausted`)."""
        forgotten = []
        for key, marks in self._local_exhausted.items():
            if model in marks and scopes(key[0]):
                marks.discard(model)
                forgotten.append(key[0])
        for key in [key for key in self._exhausted if scopes(key[0])]:
            self._exhausted.pop(key, None)
        return forgotten

    async def _mark_exhausted(self, scope: str, day: str, model: str) -> None:
        marks = self._local_exhausted.setdefault((scope, day), set())
        if model not in marks:
            marks.add(model)
            logger.info("scope %s exhausted its daily quota on %s; falling back for the rest of %s",
                        scope, model, day)
            await self._store.mark_exhausted(scope, day, model)

    async def peek(
        self, scope: str, chain: Sequence[str], quota_of: Callable[[str], int | None]
    ) -> Selection:
        """What `select` would choose now, read-only: no reservation, no exhausted mark,
        no fresh read in TIGHT mode (a model past the threshold is still chosen while its
        last read spend is under the quota). For an answer that costs nothing — a
        response-cache hit reports the model, fallback and mode of a fresh request.
        Raises QuotaExhausted as `select` would."""
        day = utc_day(self._clock())
        exhausted = await self._exhausted_for(scope, day)
        quotas: dict[str, int] = {}
        for index, model in enumerate(chain):
            quota = quota_of(model)
            if quota is None:
                return Selection(model, index > 0, Mode.NORMAL, 0, day)
            quotas[model] = quota
            if model in exhausted:
                continue
            spent = await self._spent(scope, day, model, fresh=False)
            if spent + self._unseen(scope, day, model) < self._threshold * quota:
                return Selection(model, index > 0, Mode.NORMAL, 0, day, _ratio(spent, quota))
            if spent < quota:
                return Selection(model, index > 0, Mode.TIGHT, 0, day, _ratio(spent, quota))
        raise QuotaExhausted(scope, chain, quotas)
