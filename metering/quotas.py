"""Choosing the model for a request: the first of its chain whose quota admits its worst case.

Each chain model with a daily quota is tried in turn against this process's budget
leases (`metering/leases.py`, where the design and its bound are written down): the
request is admitted by its worst-case cost against budget this replica holds, or
claims more. A model whose quota cannot take the request's worst case is skipped
for this request only; it is exhausted for the scope (sticky until the UTC day ends,
no flapping, prompt caches stay warm on the fallback) only once its quota is spent.

The quota is kept under the chain model's configured id (every id form of it —
label, base id, profile, ARN — counts against the same quota). Money is pico-USD.

A request whose cost is known before it runs (an async job, `reserve`) is admitted
by exactly that cost against a lease of its model, with no fallback; `peek` says
what `select` would choose, without holding or claiming anything (a response-cache
hit).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from adapters.slot_init import slot_init
from metering.leases import BudgetLeases, BudgetUnavailable, Grant, Mode, Refusal
from metering.money import format_usd

__all__ = ["Mode", "QuotaExhausted", "QuotaSelector", "QuotaUnavailable", "Selection"]

logger = logging.getLogger(__name__)


@slot_init  # one per metered request (issue #20)
@dataclass(frozen=True, slots=True)
class Selection:
    #: The chain member chosen.
    model: str
    #: True when the model is not the first the request's chain offered.
    fallback: bool
    mode: Mode
    #: The request's worst case held against a lease (None: the model has no quota).
    grant: Grant | None = None
    day: str = ""
    #: Committed (spent + leased) / quota of the chosen model as last seen (None without a quota).
    use_ratio: float | None = None
    #: Admitted without budget: the store was unreachable and the org fails open.
    unchecked: bool = False


class QuotaExhausted(Exception):
    """No model of the chain can take the request: spent, or too little left for its worst case."""

    def __init__(self, scope: str, chain: Sequence[str], quotas: Mapping[str, int], *, request_only: bool) -> None:
        self.scope = scope
        self.chain = tuple(chain)
        self.quotas = dict(quotas)
        #: False: every model is spent for the scope; True: only this request does not fit.
        self.request_only = request_only
        # Each quota as it was configured, exactly: "$50/day", "$0.000005/day".
        listed = ", ".join(f"{m} (${_usd(quotas[m])}/day)" for m in chain if m in quotas)
        if request_only:
            message = (f"This request's worst-case cost (its input and max output tokens) does not fit in what "
                       f"is left of scope '{scope}''s daily quota on any model of its chain: {listed}. Lower its "
                       f"max tokens or shorten it; quotas reset at 00:00 UTC.")
        else:
            message = (f"Daily quota exhausted for scope '{scope}' on every model of its chain: {listed}. "
                       f"Quotas reset at 00:00 UTC.")
        super().__init__(message)


def _usd(pico_usd: int) -> str:
    return format_usd(pico_usd).rstrip("0").rstrip(".")


class QuotaUnavailable(Exception):
    """The request needs budget, the store cannot be reached and the org fails closed."""


#: model → (the id its quota is kept under, the quota), or None when it has none.
QuotaOf = Callable[[str], "tuple[str, int] | None"]


class QuotaSelector:
    def __init__(self, leases: BudgetLeases, on_unchecked: Callable[[str, str], None] = lambda scope, model: None
                 ) -> None:
        self._leases = leases
        #: Told of every request served unchecked (fail-open while the store is unreachable).
        self._on_unchecked = on_unchecked

    @property
    def leases(self) -> BudgetLeases:
        return self._leases

    async def select(self, scope: str, day: str, chain: Sequence[str], quota_of: QuotaOf,
                     worst_case: Callable[[str], int], *, fail_closed: bool = False) -> Selection:
        """The first model of `chain` that admits the request; raise QuotaExhausted if none
        does, QuotaUnavailable if the store is needed, unreachable and `fail_closed`.

        `worst_case(model)` is the most the request can cost on that model (never raises)."""
        quotas: dict[str, int] = {}
        request_only = False
        for index, model in enumerate(chain):
            found = quota_of(model)
            if found is None:
                return Selection(model, index > 0, Mode.NORMAL, None, day)
            key_model, quota = found
            result = await self._admit(scope, day, model, key_model, quota, worst_case(model), index > 0,
                                       fail_closed)
            if isinstance(result, Selection):
                return result
            quotas[model] = quota
            request_only |= not result.exhausted
        raise QuotaExhausted(scope, chain, quotas, request_only=request_only)

    async def reserve(self, scope: str, day: str, model: str, key_model: str, quota: int, amount: int, *,
                      fail_closed: bool = False) -> Selection | None:
        """Admit exactly `amount` on `model` (its quota kept under `key_model`), or None if it
        does not fit what is left; raise QuotaUnavailable as `select` does.

        For a request whose cost is known before it runs and may be a large share of the
        quota (an async video job): held against a lease like any worst case, and settled
        at that cost, so the quota counts it exactly. One that does not fit is refused for
        itself only; a cheaper request may still fit."""
        result = await self._admit(scope, day, model, key_model, quota, amount, False, fail_closed)
        return result if isinstance(result, Selection) else None

    async def _admit(self, scope: str, day: str, model: str, key_model: str, quota: int, amount: int,
                     fallback: bool, fail_closed: bool) -> Selection | Refusal:
        """`amount` against this process's lease on the quota, as a Selection; the lease's
        Refusal when it does not fit; unchecked (fail-open) or QuotaUnavailable (fail-closed)
        when the store is needed and out of reach."""
        key = (scope, day, key_model)
        try:
            result = await self._leases.admit(key, quota, amount)
        except BudgetUnavailable as exc:
            if fail_closed:
                raise QuotaUnavailable(str(exc)) from exc
            logger.warning("serving %s for %s unchecked (fail-open): %s", model, scope, exc)
            self._on_unchecked(scope, key_model)
            return Selection(model, fallback, Mode.NORMAL, Grant(key, amount, Mode.NORMAL), day, unchecked=True)
        if isinstance(result, Grant):
            return Selection(model, fallback, result.mode, result, day, self._use_ratio(scope, day, key_model, quota))
        return result

    def forget_exhausted(self, model: str, scopes: Callable[[str], bool]) -> list[str]:
        """`model`'s quota grew for the scopes `scopes` accepts (a runtime override or a
        reload): forget this process's sticky exhausted marks of it there and its last
        reads of those scopes, so the next request re-reads the store. The scopes whose
        mark was dropped, for the caller to clear the store's mark too."""
        return self._leases.forget_exhausted(model, scopes)

    async def peek(self, scope: str, day: str, chain: Sequence[str], quota_of: QuotaOf,
                   worst_case: Callable[[str], int] = lambda model: 1) -> Selection:
        """What `select` would choose now, read-only: no claim, no hold, no write (the last
        read of the store, one read when there is none, and this process's leases). For an
        answer that costs nothing — a response-cache hit reports the model, fallback and
        mode of a fresh request. A model is passed over once it is exhausted for the scope,
        or when the request's `worst_case` fits neither this process's free slice nor that
        plus what the quota had left to claim when last read.
        Raises QuotaExhausted as `select` would, BudgetUnavailable when the store is needed
        and unreachable."""
        quotas: dict[str, int] = {}
        held = self._leases.held()
        view = await self._leases.look(scope, day)
        for index, model in enumerate(chain):
            found = quota_of(model)
            if found is None:
                return Selection(model, index > 0, Mode.NORMAL, None, day)
            key_model, quota = found
            key = (scope, day, key_model)
            quotas[model] = quota
            if self._leases.exhausted(key) or (view is not None and key_model in view.exhausted):
                continue
            free = max(held.get(key, (0, 0))[0], 0)
            remaining = view.model(key_model).remaining(quota) if view is not None else quota
            if free + max(remaining, 0) >= max(worst_case(model), 1):
                # This process's lease says; without one, near the quota slices are one request.
                mode = self._leases.mode(key) if key in held else (Mode.TIGHT if remaining * 10 < quota
                                                                   else Mode.NORMAL)
                return Selection(model, index > 0, mode, None, day, self._use_ratio(scope, day, key_model, quota))
        raise QuotaExhausted(scope, chain, quotas, request_only=False)

    def settle(self, selection: Selection, cost: int) -> tuple[int, str]:
        """The request ended: (what its lease covered of `cost`, the lease's holder id)."""
        if selection.grant is None:
            return 0, ""
        return self._leases.settle(selection.grant, cost), selection.grant.holder

    def release(self, selection: Selection) -> None:
        """The request was not sent and records no usage: its worst case is free again."""
        if selection.grant is not None:
            self._leases.release(selection.grant)

    def _use_ratio(self, scope: str, day: str, model: str, quota: int) -> float:
        view = self._leases.view(scope, day)
        committed = view.model(model).committed if view is not None else 0
        return committed / quota if quota else 1.0
