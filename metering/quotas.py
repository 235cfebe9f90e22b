"""Choosing the model for a request: the first of its chain whose quota admits its worst case.

Each chain model with a daily quota is tried in turn against this process's budget
leases (`metering/leases.py`, where the design and its bound are written down): the
request is admitted by its worst-case cost against budget this replica holds, or
claims more. A model whose quota cannot take the request's worst case is skipped
for this request only; it is exhausted for the scope (sticky until the UTC day ends,
no flapping, prompt caches stay warm on the fallback) only once its quota is spent.

The quota is kept under the chain model's configured id (every id form of it —
label, base id, profile, ARN — counts against the same quota).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from metering.leases import BudgetLeases, BudgetUnavailable, Grant, Mode

__all__ = ["Mode", "QuotaExhausted", "QuotaSelector", "QuotaUnavailable", "Selection"]

logger = logging.getLogger(__name__)


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
        listed = ", ".join(f"{m} (${quotas[m] / 1e6:g}/day)" for m in chain if m in quotas)
        if request_only:
            message = (f"This request's worst-case cost (its input and max output tokens) does not fit in what "
                       f"is left of scope '{scope}''s daily quota on any model of its chain: {listed}. Lower its "
                       f"max tokens or shorten it; quotas reset at 00:00 UTC.")
        else:
            message = (f"Daily quota exhausted for scope '{scope}' on every model of its chain: {listed}. "
                       f"Quotas reset at 00:00 UTC.")
        super().__init__(message)


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
            key = (scope, day, key_model)
            worst = worst_case(model)
            try:
                result = await self._leases.admit(key, quota, worst)
            except BudgetUnavailable as exc:
                if fail_closed:
                    raise QuotaUnavailable(str(exc)) from exc
                logger.warning("serving %s for %s unchecked (fail-open): %s", model, scope, exc)
                self._on_unchecked(scope, key_model)
                return Selection(model, index > 0, Mode.NORMAL, Grant(key, worst, Mode.NORMAL), day, unchecked=True)
            if isinstance(result, Grant):
                return Selection(model, index > 0, result.mode, result, day, self._use_ratio(scope, day, key_model,
                                                                                              quota))
            quotas[model] = quota
            request_only |= not result.exhausted
        raise QuotaExhausted(scope, chain, quotas, request_only=request_only)

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
