"""What a fresh request would be served now, read-only: a mixin of `Admission`.

A response-cache hit reports the model and mode a fresh request would get, and
`/v1/select` (the client-driven API) answers the same question for a client that
sends on its own. Both read the quota state without holding a budget, counting a
rate or changing the request: `current_choice` walks `Admission.plan`'s chain with
`plan`'s worst case, through the selector's `peek`.

It needs the admission's policies (`_policies`), quota selector (`_selector`), clock,
its per-caller policy and chain (`caller_policy`, `_chain`, `_any_quota`) and pricing
(`_worst_cost`). The names both share are here, so that `proxy/admission.py` imports
this module and not the other way round.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from adapters import family_of
from adapters.input_bound import input_token_bound
from adapters.maxtokens import max_output_tokens
from adapters.modelid import in_scope
from adapters.tiers import STANDARD, Tier
from metering.events import utc_day
from metering.quotas import Mode, QuotaExhausted, QuotaSelector, Selection
from proxy.errors import ServiceQuotaExceededException, ServiceUnavailableException
from proxy.identity import Caller
from proxy.policies import CallerPolicy, Policies
from proxy.routing import Operation, Route

__all__ = ["FAIL_CLOSED", "INVOKE_OPERATIONS", "CurrentChoice", "remembered_family_of"]

#: The operations whose body is the model family's own (the others speak Converse).
INVOKE_OPERATIONS = frozenset({Operation.INVOKE_MODEL, Operation.INVOKE_MODEL_STREAM})
FAIL_CLOSED = "Quota state is unavailable and this organization fails closed; please try again shortly."


@functools.lru_cache(maxsize=1024)
def remembered_family_of(model_id: str) -> str:
    """`adapters.family_of`, remembered: it runs for every request a quota admits."""
    return family_of(model_id)


class CurrentChoice:
    """`Admission`'s read-only choice (see the module's doc)."""

    # Admission's own, which this reads (declared here for the type checker).
    _policies: Policies
    _selector: QuotaSelector
    _clock: Callable[[], float]
    caller_policy: Callable[[Caller], CallerPolicy]
    _chain: Callable[[CallerPolicy, str], tuple[str, tuple[str, ...]]]
    _any_quota: Callable[[CallerPolicy, tuple[str, ...]], bool]
    _worst_cost: Callable[[str, int, int, Tier], int]

    async def current_choice(self, route: Route, caller: Caller, document: dict[str, Any] | None = None,
                             tier: Tier = STANDARD, *, strict: bool = False) -> tuple[str, bool, str] | None:
        """(model id sent, fallback, mode) that a fresh request for `route` (body `document`)
        would get now, read-only (nothing held, no rate counted): what a response-cache hit
        reports. A model is passed over when the request's worst case does not fit what is
        left of its quota, as `plan` would. None when a fresh request would be refused or
        the quota state cannot be read (`plan` then answers). The chain is `plan`'s (`_chain`).
        `strict` (`/v1/select`, which has no `plan` to fall back on) answers those as the
        proxy would: ServiceQuotaExceededException when the chain is spent; when the quota
        state cannot be read, ServiceUnavailableException for a fail-closed org, and for a
        fail-open one the first model no sticky mark passes over (served unchecked)."""
        if route.model_id is None:
            return None
        requested = self._policies.resolve_model(route.model_id)
        policy = self.caller_policy(caller)
        entry, chain = self._chain(policy, requested)
        if not chain:
            return None
        if not self._any_quota(policy, chain):
            selection = Selection(chain[0], False, Mode.NORMAL)
        else:
            try:
                worst_case = self._peek_worst_case(route, policy, requested, entry, document, tier)
                selection = await self._selector.peek(policy.scope_key, utc_day(self._clock()), chain,
                                                      policy.quota_entry, worst_case)
            except QuotaExhausted as exc:
                if strict:
                    raise ServiceQuotaExceededException(str(exc)) from None
                return None
            except Exception:  # the store is unreachable
                if not strict:
                    return None
                if policy.fail_closed:
                    raise ServiceUnavailableException(FAIL_CLOSED) from None
                selection = self._unchecked_choice(policy, chain)
        member = selection.model
        return (requested if member == entry else in_scope(member, requested)), member != entry, str(selection.mode)

    def _unchecked_choice(self, policy: CallerPolicy, chain: tuple[str, ...]) -> Selection:
        """What a fail-open org is served while its quota state cannot be read: the first
        model of `chain` this process has not marked exhausted (`QuotaSelector.select`)."""
        day = utc_day(self._clock())
        for index, model in enumerate(chain):
            found = policy.quota_entry(model)
            if found is None or not self._selector.leases.exhausted((policy.scope_key, day, found[0])):
                return Selection(model, index > 0, Mode.NORMAL, day=day)
        raise ServiceQuotaExceededException(f"No model of the chain is under its daily quota for scope "
                                            f"'{policy.scope_key}' now. Quotas reset at 00:00 UTC.")

    def _peek_worst_case(self, route: Route, policy: CallerPolicy, requested: str, entry: str,
                         document: dict[str, Any] | None, tier: Tier) -> Callable[[str], int]:
        """`plan`'s worst case of a request, read-only (the document is not clamped)."""
        if document is None:
            return lambda member: 1
        converse = route.operation not in INVOKE_OPERATIONS
        client_family = "converse" if converse else family_of(self._policies.base_of(requested))
        asked = max_output_tokens(client_family, document)
        if policy.max_output_tokens is not None:
            asked = min(asked or policy.max_output_tokens, policy.max_output_tokens)
        max_output = asked or self._policies.quotas.default_max_output_tokens
        limits = self._policies.model_limits
        by_family: dict[str, int] = {}  # the input bound walks the whole document: once per family, as `plan`

        def worst_case(member: str) -> int:
            sent = requested if member == entry else in_scope(member, requested)
            output = min(max_output, limits.output_limit(self._policies.base_of(sent)))
            family = remembered_family_of(self._policies.base_of(sent))
            bound = by_family.get(family)
            if bound is None:
                bound = by_family[family] = input_token_bound(document, family)
            return self._worst_cost(sent, bound, output, tier)

        return worst_case
