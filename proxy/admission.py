"""From "who asked for what" to "what is sent upstream": the request's plan.

For a model call: resolve a label, find the caller's chain from the requested
model (any id form of a chain model, application-inference-profile ARNs included
through `inference_profiles`), keep the models the app may use, clamp
max-output-tokens, choose the first model whose daily quota admits the request's
worst-case cost (held against a budget lease, `metering/leases.py`), check the
app's TPM/RPM limits, and rewrite path and body for the chosen model (translating
the body when a fallback crosses model families). Anything that stops the request
after its worst case was admitted gives it back (`release`); a request that was
sent settles what it cost (`settle`). The request's UTC day is its admission's.

When nothing changes, the client's exact path and body bytes go upstream: the
profile, the ARN, `%3A` or a raw `:` as the client sent them. A fallback model is
named in the request's routing scope (`adapters.modelid.in_scope`): a `us.`
request is served by the fallback's `us.` profile, an inference-profile ARN by
the same ARN of the fallback's profile, a bare id by the chain's configured id.
Quotas are kept per chain model (`Plan.quota_model`); metering and
`x-costkeeper-model-id` name the id actually sent (`Plan.model`).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapters import family_of
from adapters import translate as translation
from adapters.estimate import estimate_usage
from adapters.input_bound import input_token_bound
from adapters.maxtokens import clamp_max_output_tokens, max_output_tokens
from adapters.modelid import encode_model_id, in_scope, routing_scope
from adapters.usage import Usage
from metering.events import utc_day
from metering.pricing import PriceTable
from metering.quotas import Mode, QuotaExhausted, QuotaSelector, QuotaUnavailable, Selection
from proxy.errors import (
    AccessDeniedException,
    ServiceQuotaExceededException,
    ServiceUnavailableException,
    ThrottlingException,
    ValidationException,
)
from proxy.identity import Caller
from proxy.policies import CallerPolicy, Policies, RateLimit
from proxy.ratelimit import RateLimiter
from proxy.routing import METERED, Operation, Route

__all__ = ["Admission", "Plan"]

logger = logging.getLogger(__name__)

_INVOKE = frozenset({Operation.INVOKE_MODEL, Operation.INVOKE_MODEL_STREAM})
_NO_ACCESS = "You don't have access to the model with the specified model ID."
_FAIL_CLOSED = "Quota state is unavailable and this organization fails closed; please try again shortly."
#: The worst case of a request whose size cannot even be priced: no quota admits it.
_UNAFFORDABLE = 2**62


@dataclass(slots=True)
class Plan:
    raw_path: str
    body: bytes
    #: The model id sent upstream ("" for operations that name none): priced and metered.
    model: str = ""
    #: The chain model the quota is kept under (its configured id); "" → `model`.
    quota_model: str = ""
    #: The model id that tells the served model's family (differs for application profiles).
    family_model: str = ""
    fallback: bool = False
    mode: str = "NORMAL"
    quota_scope: str = ""
    #: The request's worst case as admitted against a quota (settled once when it ends).
    selection: Selection | None = None
    #: Epoch seconds of the admission: the usage event's timestamp, so the request is
    #: reserved, settled, aggregated and reported on the same UTC day.
    admitted_at: float = 0.0
    #: Client family and served family when the body was translated (InvokeModel).
    translate: tuple[str, str] | None = None
    #: (limiter key, model, tokens counted at admission, the second admitted) for the TPM correction.
    rate: tuple[str, str, int, int] | None = None
    cache_ttl: float | None = None

    @property
    def day(self) -> str:
        return utc_day(self.admitted_at)


class Admission:
    def __init__(
        self,
        policies: Policies,
        selector: QuotaSelector,
        prices: PriceTable,
        limiter: RateLimiter,
        on_quota_use: Callable[[str, str, float], None] = lambda scope, model, ratio: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._on_quota_use = on_quota_use
        self._clock = clock
        self._policies = policies
        self._selector = selector
        self._prices = prices
        self._limiter = limiter
        self._callers: dict[tuple[str, str], CallerPolicy] = {}

    def caller_policy(self, caller: Caller) -> CallerPolicy:
        key = (caller.org, caller.app)
        policy = self._callers.get(key)
        if policy is None:
            policy = self._callers[key] = self._policies.for_caller(caller.org, caller.app)
        return policy

    async def plan(
        self, route: Route, caller: Caller, raw_path: str, body: bytes, document: dict[str, Any] | None
    ) -> Plan:
        if route.model_id is None:
            return Plan(raw_path, body)
        admitted_at = self._clock()
        requested = self._policies.resolve_model(route.model_id)
        if route.operation not in METERED or document is None:
            return Plan(_rewritten(raw_path, route.model_id, requested), body, model=requested,
                        family_model=self._policies.base_of(requested), admitted_at=admitted_at)
        policy = self.caller_policy(caller)
        # An application inference profile names no model: its mapped model finds the chain.
        chain, _ = policy.chain_from(self._policies.base_of(requested))
        entry = chain[0]
        scope = routing_scope(requested)
        if scope is not None:
            # A fallback stays in the request's scope; one with no profile there is skipped.
            chain = (entry, *(model for model in chain[1:] if self._policies.serves(model, scope)))
        chain = tuple(model for model in chain if policy.allows(model))
        if not chain:
            raise AccessDeniedException(_NO_ACCESS)

        def sent_id(member: str) -> str:
            """The id sent upstream when `member` of the chain serves the request."""
            return requested if member == entry else in_scope(member, requested)

        converse = route.operation not in _INVOKE
        client_family = "converse" if converse else family_of(self._policies.base_of(requested))
        changed = False
        if policy.max_output_tokens is not None:
            changed = clamp_max_output_tokens(client_family, document, policy.max_output_tokens)
        max_output = max_output_tokens(client_family, document) or self._policies.quotas.default_max_output_tokens
        by_member: dict[str, int] = {}
        by_family: dict[str, int] = {}

        def input_bound(member: str) -> int:
            """An upper bound of the input tokens on `member` (its family sets the image formula);
            computed only when a quota or a limit needs it."""
            bound = by_member.get(member)
            if bound is None:
                family = _family_of(self._policies.base_of(sent_id(member)))
                if family not in by_family:
                    by_family[family] = input_token_bound(document, family)
                bound = by_member[member] = by_family[family]
            return bound

        def worst_case(member: str) -> int:
            """Priced as the id that would be sent (a geo profile can cost more than its base),
            prompt tokens at the dearer of the input and cache-write prices."""
            return self._worst_cost(sent_id(member), input_bound(member), max_output)

        selection = await self._select(policy, chain, worst_case, utc_day(admitted_at))
        try:
            # Rate limits count an estimate of the tokens (≈ 4 bytes a token), as before
            # leases: a throttle, corrected to the usage when the request ends.
            return self._planned(route, caller, raw_path, body, document, policy, selection, requested, entry,
                                 sent_id(selection.model), client_family, changed,
                                 lambda: estimate_usage(body, 0).input_tokens + max_output, admitted_at)
        except BaseException:
            # Not sent: its worst case goes back (no usage event will settle it).
            self._selector.release(selection)
            raise

    def _planned(self, route: Route, caller: Caller, raw_path: str, body: bytes, document: dict[str, Any],
                 policy: CallerPolicy, selection: Selection, requested: str, entry: str, model: str,
                 client_family: str, changed: bool, tokens: Callable[[], int], admitted_at: float) -> Plan:
        member = selection.model
        if selection.use_ratio is not None:
            self._on_quota_use(policy.scope_key, member, selection.use_ratio)
        rate = self._admit_rate(caller, policy, member, tokens)
        quota = policy.quota_entry(member)
        plan = Plan(
            raw_path,
            body,
            model=model,
            quota_model=quota[0] if quota is not None else member,
            family_model=self._policies.base_of(model),
            # Not the model asked for, whether a quota or `allowed_models` moved it.
            fallback=member != entry,
            mode=str(selection.mode),
            quota_scope=policy.scope_key if quota is not None else "",
            selection=selection if selection.grant is not None else None,
            admitted_at=admitted_at,
            rate=rate,
            cache_ttl=policy.response_cache_ttl,
        )
        if model != requested:
            try:
                if route.operation not in _INVOKE:
                    document = translation.translate_converse_request(document, model)
                else:
                    served_family = family_of(self._policies.base_of(model))
                    if served_family != client_family:
                        document = translation.translate_request(client_family, served_family, document)
                        plan.translate = (client_family, served_family)
            except translation.TranslationError as exc:
                raise ValidationException(f"Cannot serve this request with fallback model {model}: {exc}") from None
            changed = True
        if model != route.model_id:
            plan.raw_path = _rewritten(raw_path, route.model_id or "", model)
        if changed:
            plan.body = json.dumps(document, separators=(",", ":")).encode()
        return plan

    def _worst_cost(self, model: str, input_tokens: int, output_tokens: int) -> int:
        """The most a request can cost on `model`; never raises (absurd sizes cost a lot)."""
        try:
            worst = self._prices.cost_micro_usd(model, Usage(input_tokens, output_tokens)) or 0
            price = self._prices.price_of(model)
            if price is not None and (price.cache_write > price.input
                                      or any(tier.cache_write > tier.input for tier in price.tiers)):
                worst = max(worst, self._prices.cost_micro_usd(
                    model, Usage(0, output_tokens, cache_write_tokens=input_tokens)) or 0)
        except (OverflowError, ValueError):
            return _UNAFFORDABLE
        return worst

    async def _select(self, policy: CallerPolicy, chain: tuple[str, ...], worst_case: Callable[[str], int],
                      day: str) -> Selection:
        if not any(policy.quota_of(model) is not None for model in chain):
            return Selection(chain[0], False, Mode.NORMAL, day=day)
        try:
            return await self._selector.select(policy.scope_key, day, chain, policy.quota_entry, worst_case,
                                               fail_closed=policy.fail_closed)
        except QuotaExhausted as exc:
            raise ServiceQuotaExceededException(str(exc)) from None
        except QuotaUnavailable:
            # Spend cannot be counted right now: a fail-closed org is not served beyond what it holds.
            raise ServiceUnavailableException(_FAIL_CLOSED) from None

    def _admit_rate(self, caller: Caller, policy: CallerPolicy, model: str,
                    tokens: Callable[[], int]) -> tuple[str, str, int, int] | None:
        limit: RateLimit | None = policy.rate_limits.get(model)
        if limit is None:
            return None
        key = f"{caller.org}/{caller.app}"
        counted = tokens()
        second = self._limiter.second()
        refusal = self._limiter.admit(key, model, limit, counted, at=second)
        if refusal is not None:
            raise ThrottlingException(refusal)
        return key, model, counted, second

    def settle(self, plan: Plan, usage: Usage) -> tuple[int, str]:
        """The request ended having used `usage`: (what its lease covered of the cost, the
        lease's holder id), for its usage event. Once per plan; no I/O."""
        selection, plan.selection = plan.selection, None
        if selection is None:
            return 0, ""
        return self._selector.settle(selection, self._prices.cost_micro_usd(plan.model, usage) or 0)

    def release(self, plan: Plan) -> None:
        """The request ends without a usage event: its worst case goes back."""
        selection, plan.selection = plan.selection, None
        if selection is not None:
            self._selector.release(selection)

    def settle_rate(self, plan: Plan, usage: Usage) -> None:
        if plan.rate is not None:
            key, model, counted, second = plan.rate
            self._limiter.correct(key, model, counted, usage.input_tokens + usage.output_tokens, second)


@functools.lru_cache(maxsize=1024)
def _family_of(model_id: str) -> str:
    """`adapters.family_of`, remembered: it runs for every request a quota admits."""
    return family_of(model_id)


def _rewritten(raw_path: str, requested: str, model: str) -> str:
    """The path for `model`, or the client's exact path when the model is unchanged."""
    if model == requested:
        return raw_path
    action = raw_path.rsplit("/", 1)[1]
    return f"/model/{encode_model_id(model)}/{action}"
