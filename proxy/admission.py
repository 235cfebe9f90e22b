"""From "who asked for what" to "what is sent upstream": the request's plan.

For a model call: resolve a label, refuse a max-tokens value that is not an
integer within the model's limit (`model_limits`), find the caller's chain from
the requested model (any id form of a chain model, application-inference-profile
ARNs included through `inference_profiles`), keep the models the app may use, clamp
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

StartAsyncInvoke names its model in the body and does not fall back: its body is
read and priced by `proxy/job_admission.py`, then its cost is held against its
model's quota here (`_plan_one`). InvokeModelWithBidirectionalStream streams a request that cannot be rewritten: only
its path changes. Its model is admitted while its quota is not spent, and a spent one
falls back along its chain, whose models all speak that protocol (`_plan_stream`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from adapters import family_of
from adapters import translate as translation
from adapters.estimate import estimate_usage
from adapters.input_bound import input_token_bound
from adapters.maxtokens import (
    MaxTokensError,
    checked_max_output_tokens,
    clamp_max_output_tokens,
    max_output_tokens,
)
from adapters.memo import remember
from adapters.modelid import encode_model_id, in_scope, routing_scope
from adapters.tiers import STANDARD, Tier
from adapters.usage import Usage
from metering.events import utc_day
from metering.money import format_usd
from metering.pricing import PriceTable
from metering.quotas import Mode, QuotaExhausted, QuotaSelector, QuotaUnavailable, Selection
from metering.tags import Tags
from metering.unit_prices import UnitPrices
from proxy.choice import FAIL_CLOSED as _FAIL_CLOSED
from proxy.choice import INVOKE_OPERATIONS as _INVOKE
from proxy.choice import CurrentChoice
from proxy.choice import remembered_family_of as _family_of
from proxy.errors import (
    AccessDeniedException,
    ServiceQuotaExceededException,
    ServiceUnavailableException,
    ThrottlingException,
    ValidationException,
)
from proxy.identity import Caller
from proxy.job_admission import job_request
from proxy.policies import CallerPolicy, Policies, RateLimit
from proxy.ratelimit import RateLimiter
from proxy.routing import METERED, Operation, Route

__all__ = ["Admission", "Plan"]

logger = logging.getLogger(__name__)

_NO_ACCESS = "You don't have access to the model with the specified model ID."
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
    #: The service tier and latency mode asked for: the price when the response does not say.
    tier: Tier = STANDARD
    #: Cost attribution tags of the request (proxy/tags.py), set by the handler.
    tags: Tags = ()

    @property
    def day(self) -> str:
        return utc_day(self.admitted_at)


class Admission(CurrentChoice):
    def __init__(
        self,
        policies: Policies,
        selector: QuotaSelector,
        prices: PriceTable,
        limiter: RateLimiter,
        on_quota_use: Callable[[str, str, float], None] = lambda scope, model, ratio: None,
        unit_prices: UnitPrices | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._unit_prices = unit_prices or UnitPrices({})
        self._on_quota_use = on_quota_use
        self._clock = clock
        self._policies = policies
        self._selector = selector
        self._prices = prices
        self._limiter = limiter
        self._callers: dict[tuple[str, str], CallerPolicy] = {}
        #: (id of a caller policy, model requested) → (that policy, `_chain`'s answer), and
        #: (id of a caller policy, chain) → (that policy, whether a model of it has a quota):
        #: the same for every request of a caller and model (issue #20).
        self._chains: dict[tuple[int, str], tuple[CallerPolicy, tuple[str, tuple[str, ...]]]] = {}
        self._quoted: dict[tuple[int, tuple[str, ...]], tuple[CallerPolicy, bool]] = {}
        #: (model, UTC day) → the selection of a chain without a quota: immutable and holding
        #: no grant, the same for every such request of the day (issue #20).
        self._unquoted: dict[tuple[str, str], Selection] = {}

    def caller_policy(self, caller: Caller) -> CallerPolicy:
        key = (caller.org, caller.app)
        policy = self._callers.get(key)
        if policy is None:
            policy = self._callers[key] = self._policies.for_caller(caller.org, caller.app)
        return policy

    def check_operation(self, operation: str, caller: Caller) -> None:
        """Refuse an operation the caller's `allowed_operations` does not name."""
        if not self.caller_policy(caller).allows_operation(operation):
            raise AccessDeniedException(f"You are not allowed to call {operation} through this proxy "
                                        f"(it is not in your application's allowed_operations).")

    async def plan(
        self, route: Route, caller: Caller, raw_path: str, body: bytes, document: dict[str, Any] | None,
        tier: Tier = STANDARD,
    ) -> Plan:
        admitted_at = self._clock()
        if route.operation is Operation.START_ASYNC_INVOKE:
            body, model, cost = job_request(self._policies, self.caller_policy(caller), self._unit_prices, body,
                                            document or {})
            return await self._plan_one(caller, raw_path, body, model, cost, admitted_at)
        if route.model_id is None:
            return Plan(raw_path, body)
        requested = self._policies.resolve_model(route.model_id)
        if route.operation is Operation.INVOKE_MODEL_BIDI:
            return await self._plan_stream(caller, raw_path, route.model_id, requested, admitted_at)
        if route.operation not in METERED or document is None:
            # CountTokens bills nothing, but it names a model: the model asked for must be
            # one the app may use, as for inference (it has no fallback to move to).
            entry, chain = self._chain(self.caller_policy(caller), requested)
            if entry not in chain:
                raise AccessDeniedException(_NO_ACCESS)
            return Plan(_rewritten(raw_path, route.model_id, requested), body, model=requested,
                        family_model=self._policies.base_of(requested), admitted_at=admitted_at)
        converse = route.operation not in _INVOKE
        client_family = "converse" if converse else _family_of(self._policies.base_of(requested))
        limits = self._policies.model_limits
        try:
            # Before any quota or limit sees it: a value the model cannot honour is refused.
            limit = limits.output_limit(self._policies.base_of(requested))
            asked = checked_max_output_tokens(client_family, document, limit)
        except MaxTokensError as exc:
            raise ValidationException(str(exc)) from None
        policy = self.caller_policy(caller)
        asked_tier = tier.service_tier or "default"
        if policy.allowed_service_tiers is not None and asked_tier not in policy.allowed_service_tiers:
            raise AccessDeniedException(f"This application may not use the {asked_tier} service tier "
                                        "(allowed_service_tiers).")
        entry, chain = self._chain(policy, requested)
        if not chain:
            raise AccessDeniedException(_NO_ACCESS)

        def sent_id(member: str) -> str:
            """The id sent upstream when `member` of the chain serves the request."""
            return requested if member == entry else in_scope(member, requested)

        if tier is not STANDARD and tier != STANDARD:  # `is` first: a dataclass `!=` builds two tuples
            chain = self._priced_in_tier(chain, sent_id, tier)

        changed = False
        if policy.max_output_tokens is not None:
            changed = clamp_max_output_tokens(client_family, document, policy.max_output_tokens)
        if changed:  # (else the document is as checked: its value is `asked`)
            asked = max_output_tokens(client_family, document)
        max_output = asked or self._policies.quotas.default_max_output_tokens
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
            in the requested tier, prompt tokens at the dearer of the input and cache-write
            prices. A fallback that produces fewer tokens than asked for costs at most its limit."""
            sent = sent_id(member)
            output = min(max_output, limits.output_limit(self._policies.base_of(sent)))
            return self._worst_cost(sent, input_bound(member), output, tier)

        day = utc_day(admitted_at)
        selection = self._free(policy, chain, day) or await self._select(policy, chain, worst_case, day)
        try:
            # Rate limits count an estimate of the tokens (≈ 4 bytes a token), as before
            # leases: a throttle, corrected to the usage when the request ends.
            return self._planned(route, caller, raw_path, body, document, policy, selection, requested, entry,
                                 sent_id(selection.model), client_family, changed,
                                 lambda: estimate_usage(body, 0).input_tokens + max_output, admitted_at, tier)
        except BaseException:
            # Not sent: its worst case goes back (no usage event will settle it).
            self._selector.release(selection)
            raise

    def _planned(self, route: Route, caller: Caller, raw_path: str, body: bytes, document: dict[str, Any],
                 policy: CallerPolicy, selection: Selection, requested: str, entry: str, model: str,
                 client_family: str, changed: bool, tokens: Callable[[], int], admitted_at: float,
                 tier: Tier) -> Plan:
        member = selection.model
        converse = route.operation not in _INVOKE
        if selection.use_ratio is not None:
            self._on_quota_use(policy.scope_key, member, selection.use_ratio)
        rate = self._admit_rate(caller, policy, member, tokens)
        plan = self._selected_plan(raw_path, body, policy, selection, entry, model, admitted_at, rate,
                                   cache_ttl=policy.response_cache_ttl, tier=tier)
        if model != requested:
            try:
                if converse:
                    document = translation.translate_converse_request(document, model)
                else:
                    served_family = family_of(self._policies.base_of(model))
                    if served_family != client_family:
                        document = translation.translate_request(client_family, served_family, document)
                        plan.translate = (client_family, served_family)
            except translation.TranslationError as exc:
                raise ValidationException(f"Cannot serve this request with fallback model {model}: {exc}") from None
            # A fallback that produces fewer tokens than asked for gets its own limit: Bedrock
            # would refuse the larger value, and the worst case was priced at that limit.
            served_family = "converse" if converse else family_of(self._policies.base_of(model))
            limit = self._policies.model_limits.listed_limit(self._policies.base_of(model))
            asked = max_output_tokens(served_family, document)
            if limit is not None and asked is not None and asked > limit:
                clamp_max_output_tokens(served_family, document, limit)
            changed = True
        if model != route.model_id:
            plan.raw_path = _rewritten(raw_path, route.model_id or "", model)
        if changed:
            plan.body = json.dumps(document, separators=(",", ":")).encode()
        return plan

    def _selected_plan(self, raw_path: str, body: bytes, policy: CallerPolicy, selection: Selection, entry: str,
                       model: str, admitted_at: float, rate: tuple[str, str, int, int] | None,
                       **extra: Any) -> Plan:
        """The plan of a request the quota selector admitted on `selection.model` (sent as `model`)."""
        member = selection.model
        quota = policy.quota_entry(member)
        return Plan(
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
            **extra,
        )

    def _worst_cost(self, model: str, input_tokens: int, output_tokens: int, tier: Tier) -> int:
        """The most a request can cost on `model` in `tier`; never raises (absurd sizes cost a lot)."""
        try:
            worst = self._prices.cost_pico_usd(model, Usage(input_tokens, output_tokens, service_tier=tier.service_tier,
                                                            latency=tier.latency)) or 0
            price = self._prices.price_of(model)
            dearer = [price, *price.tiers, *((price.latency_optimized,) if price.latency_optimized else ())
                      ] if price is not None else []
            if any(rates.cache_write > rates.input for rates in dearer):
                worst = max(worst, self._prices.cost_pico_usd(model, Usage(
                    0, output_tokens, cache_write_tokens=input_tokens, service_tier=tier.service_tier,
                    latency=tier.latency)) or 0)
        except (OverflowError, ValueError):
            return _UNAFFORDABLE
        return worst

    async def _plan_one(self, caller: Caller, raw_path: str, body: bytes, model: str, worst_case: int,
                        admitted_at: float) -> Plan:
        """One model, no fallback: allowed, under its rate limit, and under its quota by `worst_case`."""
        policy = self.caller_policy(caller)
        if not policy.allows(model):
            raise AccessDeniedException(_NO_ACCESS)
        day = utc_day(admitted_at)
        entry = policy.quota_entry(model)
        key = entry[0] if entry is not None else policy.quota_key(model)
        selection = Selection(key, False, Mode.NORMAL, day=day)
        if entry is not None:
            quota = entry[1]
            # At least 1 pico-USD: a spent quota admits nothing, not even a stream of unknown cost.
            amount = max(worst_case, 1)
            reserved = await self._guarded(policy, lambda: self._selector.reserve(
                policy.scope_key, day, key, key, quota, amount, fail_closed=policy.fail_closed))
            if reserved is None:
                raise ServiceQuotaExceededException(
                    f"Not enough of the daily quota of scope '{policy.scope_key}' is left on {key} "
                    f"({format_usd(quota)}/day) for this request ({format_usd(amount)}). Quotas reset at 00:00 UTC.")
            selection = reserved
        try:
            if selection.use_ratio is not None:
                self._on_quota_use(policy.scope_key, key, selection.use_ratio)
            rate = self._admit_rate(caller, policy, key, lambda: 0)
        except BaseException:
            self._selector.release(selection)  # not sent: what it held goes back
            raise
        return Plan(
            raw_path,
            body,
            model=model,
            quota_model=key,
            family_model=self._policies.base_of(model),
            mode=str(selection.mode),
            quota_scope=policy.scope_key if entry is not None else "",
            selection=selection if selection.grant is not None else None,
            admitted_at=admitted_at,
            rate=rate,
        )

    async def _plan_stream(self, caller: Caller, raw_path: str, asked: str, requested: str,
                           admitted_at: float) -> Plan:
        """A bidirectional stream: its cost is unknown until it ends, so a model is admitted
        while its quota is not spent (a worst case of 1 pico-USD), and a spent one falls back
        along the chain, whose models all speak the protocol (checked at start-up,
        proxy/policies.py). Only the path changes: the stream itself is relayed as sent."""
        policy = self.caller_policy(caller)
        entry, chain = self._chain(policy, requested)
        if not chain:
            raise AccessDeniedException(_NO_ACCESS)
        if len(chain) == 1 and chain[0] == entry:
            return await self._plan_one(caller, _rewritten(raw_path, asked, requested), b"", requested, 0,
                                        admitted_at)
        day = utc_day(admitted_at)
        selection = self._free(policy, chain, day) or await self._select(policy, chain, lambda member: 1, day)
        try:
            member = selection.model
            model = requested if member == entry else in_scope(member, requested)
            if selection.use_ratio is not None:
                self._on_quota_use(policy.scope_key, member, selection.use_ratio)
            rate = self._admit_rate(caller, policy, member, lambda: 0)
        except BaseException:
            self._selector.release(selection)  # not sent: what it held goes back
            raise
        return self._selected_plan(_rewritten(raw_path, asked, model), b"", policy, selection, entry, model,
                                   admitted_at, rate)

    @staticmethod
    async def _guarded(policy: CallerPolicy, reserve: Callable[[], Any]) -> Selection | None:
        """`reserve()` (a selector call) under the org's fail-open or fail-closed rule: the
        selector serves unchecked (fail-open) or raises QuotaUnavailable (fail-closed)."""
        try:
            result: Selection | None = await reserve()
        except QuotaUnavailable:
            raise ServiceUnavailableException(_FAIL_CLOSED) from None
        return result

    def _priced_in_tier(self, chain: tuple[str, ...], sent_id: Callable[[str], str], tier: Tier) -> tuple[str, ...]:
        """The chain without fallbacks whose price lacks `tier`; refuse the request when
        its first model's does: the quota must count what Bedrock bills for the tier."""
        first = sent_id(chain[0])
        missing = self._prices.unpriced_tier(first, tier.service_tier, tier.latency)
        if missing is not None:
            raise ValidationException(
                f"Cost Keeper has no price for the {tier} tier of {first} (pricing: {missing}), so it cannot "
                "count it against a quota; ask without it, or have the proxy's operator price it.")
        return (chain[0], *(model for model in chain[1:]
                            if self._prices.unpriced_tier(sent_id(model), tier.service_tier, tier.latency) is None))

    def _free(self, policy: CallerPolicy, chain: tuple[str, ...], day: str) -> Selection | None:
        """The selection of a chain no quota counts (its first model), or None: without an
        await, since most chains have no quota and a coroutine costs more than this."""
        if self._any_quota(policy, chain):
            return None
        selection = self._unquoted.get((chain[0], day))
        if selection is None:
            selection = remember(self._unquoted, (chain[0], day), Selection(chain[0], False, Mode.NORMAL, day=day),
                                 _CHAINS_KEPT)
        return selection

    async def _select(self, policy: CallerPolicy, chain: tuple[str, ...], worst_case: Callable[[str], int],
                      day: str) -> Selection:
        """A chain some quota counts (`_free` answered None): its budget leases choose."""
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
        if plan.selection is None:  # nothing held: no need to price it here (its event does)
            return 0, ""
        return self.settle_cost(plan, self._prices.cost_pico_usd(plan.model, usage) or 0)

    def settle_cost(self, plan: Plan, cost: int) -> tuple[int, str]:
        """`settle` for a request whose cost (pico-USD) is known without tokens (an async job)."""
        selection, plan.selection = plan.selection, None
        if selection is None:
            return 0, ""
        return self._selector.settle(selection, cost)

    def release(self, plan: Plan) -> None:
        """The request ends without a usage event: its worst case goes back."""
        selection, plan.selection = plan.selection, None
        if selection is not None:
            self._selector.release(selection)

    def settle_rate(self, plan: Plan, usage: Usage) -> None:
        if plan.rate is not None:
            key, model, counted, second = plan.rate
            self._limiter.correct(key, model, counted, usage.input_tokens + usage.output_tokens, second)

    def _chain(self, policy: CallerPolicy, requested: str) -> tuple[str, tuple[str, ...]]:
        """The model asked for (the chain's entry) and the chain models that may serve
        the request, in order: a fallback stays in the request's routing scope (one with
        no profile there is skipped), and only models the app may use are kept."""
        return _remembered(self._chains, policy, requested, lambda: self._chain_of(policy, requested))

    def _any_quota(self, policy: CallerPolicy, chain: tuple[str, ...]) -> bool:
        """A model of `chain` has a daily quota for the caller."""
        return _remembered(self._quoted, policy, chain,
                           lambda: any(policy.quota_of(model) is not None for model in chain))

    def _chain_of(self, policy: CallerPolicy, requested: str) -> tuple[str, tuple[str, ...]]:
        # An application inference profile names no model: its mapped model finds the chain.
        chain, _ = policy.chain_from(self._policies.base_of(requested))
        entry = chain[0]
        scope = routing_scope(requested)
        if scope is not None:
            chain = (entry, *(model for model in chain[1:] if self._policies.serves(model, scope)))
        return entry, tuple(model for model in chain if policy.allows(model))

#: `Admission._chains` and `_quoted` hold at most this many answers each (callers are
#: bounded by config and issued keys, the model ids asked for are not).
_CHAINS_KEPT = 4096
_Key = TypeVar("_Key")
_Answer = TypeVar("_Answer")


def _remembered(table: dict[tuple[int, _Key], tuple[CallerPolicy, _Answer]], policy: CallerPolicy, key: _Key,
                compute: Callable[[], _Answer]) -> _Answer:
    """`compute()`, a pure function of `policy` (immutable, kept by `Admission._callers`)
    and `key`, remembered in `table` under the policy's identity."""
    memo = table.get((id(policy), key))
    if memo is not None and memo[0] is policy:
        return memo[1]
    return remember(table, (id(policy), key), (policy, compute()), _CHAINS_KEPT)[1]


def _rewritten(raw_path: str, requested: str, model: str) -> str:
    """The path for `model`, or the client's exact path when the model is unchanged.

    Spelled as the client spelled its own id: botocore encodes `:` as `%3A`, the
    Anthropic SDK (and Claude Code) leaves it raw; either way `/` is `%2F`."""
    if model == requested:
        return raw_path
    _, _, segment, action = raw_path.split("/", 3)
    encoded = encode_model_id(model)
    if ":" in segment:
        encoded = encoded.replace("%3A", ":")
    return f"/model/{encoded}/{action}"
