"""Who may use which model, up to what daily spend: labels, chains, quotas, per-app policies.

Built once at start-up from `config.yaml` (`models`, `fallback`, `orgs`, `quotas`)
and validated there, so a chain that cannot work is refused before the first
request: an unknown label, a model twice in one chain, a chain model without a
price (its spend could not be counted against a quota), a step from one model
family to another that the adapters cannot translate, or a chain that mixes models of
InvokeModelWithBidirectionalStream with others (a stream cannot change protocol).

A chain is a list of labels or model ids, resolved to model ids. A request that
names a chain member (by label, id, inference profile or ARN of it) starts the
chain there; a request for a model in no chain is forwarded as asked.

`model_scopes` says in which routing scopes Bedrock serves each model: `in_region`
(the bare id, on-demand in the caller's Region) and the inference-profile scopes
(`us`, `eu`, `apac`, `jp`, `au`, `ca`, `us-gov`, `global`). A fallback keeps the
request's scope (`adapters.modelid.in_scope`), so the table decides what a chain
can do: a chain id that Bedrock would refuse (a bare id of a model served only
through profiles, a profile that does not exist) and a chain whose fallback has
no profile in a scope its earlier models are served in are refused at start-up,
naming the model and the scope. A model the table does not list is taken to be
served in every scope.

`allowed_operations` (per org, an app's own replacing its org's) names the Bedrock
Runtime operations an app may call; by default the inference operations
(`proxy.routing.INFERENCE`). Anything else is refused with `AccessDeniedException`
before it can reach the upstream with the proxy's credentials. `allowed_s3_outputs`
(same inheritance) lists the `s3://bucket/prefix/` locations a StartAsyncInvoke may
write its output to: Bedrock writes there with the proxy's role, so without it any
app may write wherever that role may.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from adapters.modelid import base_model_id
from proxy.model_limits import ModelLimits
from proxy.routing import INFERENCE

__all__ = [
    "AppPolicy",
    "OrgPolicy",
    "Policies",
    "CallerPolicy",
    "QuotaSettings",
    "RateLimit",
    "PolicyError",
]

Scope = Literal["ORG", "APP"]

logger = logging.getLogger(__name__)


class PolicyError(ValueError):
    """The policy configuration cannot work; the message names the key."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    tpm: int | None = None
    rpm: int | None = None


@dataclass(frozen=True, slots=True)
class QuotaSettings:
    #: Worst-case output when a request sets no max-tokens of its own.
    default_max_output_tokens: int = 4096
    #: Seconds a budget lease lives unless renewed (metering/leases.py): a dead replica's
    #: slices come back after this, and replicas' clocks must agree within a sixth of it.
    lease_ttl: float = 30.0
    #: Seconds between two reads of the runtime quota overrides (`costkeeper quota set`):
    #: every replica applies a change within this time, in the background.
    overrides_refresh: float = 2.0


@dataclass(frozen=True, slots=True)
class AppPolicy:
    chain: tuple[str, ...] | None = None
    #: model id → pico-USD per UTC day (used when the org's scope is APP).
    daily_quota: Mapping[str, int] | None = None
    max_output_tokens: int | None = None
    allowed_models: frozenset[str] | None = None
    rate_limits: Mapping[str, RateLimit] = field(default_factory=lambda: MappingProxyType({}))
    response_cache_ttl: float | None = None
    #: Operation names; None → the org's.
    allowed_operations: frozenset[str] | None = None
    #: `s3://bucket/prefix/` locations for async-invocation output; None → the org's.
    allowed_s3_outputs: tuple[str, ...] | None = None
    #: Service tiers the app may ask for (`default`, `priority`, `flex`, `reserved`); None: any priced one.
    allowed_service_tiers: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class OrgPolicy:
    scope: Scope = "ORG"
    chain: tuple[str, ...] | None = None
    daily_quota: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    fail_closed: bool = False
    #: Operation names; None → `proxy.routing.INFERENCE`.
    allowed_operations: frozenset[str] | None = None
    #: `s3://bucket/prefix/` locations for async-invocation output; None → anywhere.
    allowed_s3_outputs: tuple[str, ...] | None = None
    apps: Mapping[str, AppPolicy] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class CallerPolicy:
    """Everything selection needs about one org/app, resolved once and cached."""

    scope_key: str
    chain: tuple[str, ...]
    daily_quota: Mapping[str, int]
    max_output_tokens: int | None
    allowed_models: frozenset[str] | None
    rate_limits: Mapping[str, RateLimit]
    response_cache_ttl: float | None
    fail_closed: bool
    allowed_service_tiers: frozenset[str] | None = None
    #: The operations the app may call (its own list, else its org's, else INFERENCE).
    allowed_operations: frozenset[str] = INFERENCE
    #: Where its async invocations may write (its own list, else its org's); None → anywhere.
    allowed_s3_outputs: tuple[str, ...] | None = None
    #: Model id → who set its quota, for models whose quota a runtime override sets
    #: (metering/overrides.py); the others come from config.yaml.
    overridden: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def allows_operation(self, operation: str) -> bool:
        return operation in self.allowed_operations

    def allows_s3_output(self, uri: str) -> bool:
        """`uri` is one of the allowed locations or inside one (`s3://b/p` for `s3://b/p/`)."""
        if self.allowed_s3_outputs is None:
            return True
        return any(uri == prefix[:-1] or uri.startswith(prefix) for prefix in self.allowed_s3_outputs)

    def quota_key(self, model_id: str) -> str:
        """The id `model_id`'s quota is configured under (its own, else its base model's):
        one key per quota however the request names the model, so `us.` X and X share it."""
        if model_id in self.daily_quota:
            return model_id
        base = base_model_id(model_id)
        return base if base in self.daily_quota else model_id

    def chain_from(self, model_id: str) -> tuple[tuple[str, ...], bool]:
        """The chain to try for a requested model, and whether it is a chain at all.

        The requested model matches a chain member by id or by base model
        (`us.amazon.nova-pro-v1:0` matches `amazon.nova-pro-v1:0`).
        """
        base = base_model_id(model_id)
        for index, member in enumerate(self.chain):
            if member == model_id or base_model_id(member) == base:
                return self.chain[index:], True
        return (model_id,), False

    def quota_of(self, model_id: str) -> int | None:
        entry = self.quota_entry(model_id)
        return entry[1] if entry is not None else None

    def quota_entry(self, model_id: str) -> tuple[str, int] | None:
        """(the id the quota is configured and kept under, the quota) for any form of a
        model: its configured id, base id, profile or ARN; None when it has no quota."""
        quota = self.daily_quota.get(model_id)
        if quota is not None:
            return model_id, quota
        base = base_model_id(model_id)
        for key, quota in self.daily_quota.items():
            if key == base or base_model_id(key) == base:
                return key, quota
        return None

    def allows(self, model_id: str) -> bool:
        if self.allowed_models is None:
            return True
        return model_id in self.allowed_models or base_model_id(model_id) in self.allowed_models


@dataclass(frozen=True, slots=True)
class Policies:
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    default_chain: tuple[str, ...] = ()
    orgs: Mapping[str, OrgPolicy] = field(default_factory=lambda: MappingProxyType({}))
    quotas: QuotaSettings = field(default_factory=QuotaSettings)
    #: Application-inference-profile ARNs (and other ids that name no model) → base model id.
    profiles: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Base model id → the routing scopes Bedrock serves it in (`in_region`, `us`, …, `global`).
    model_scopes: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    #: Output-token limits per model (`model_limits`, proxy/model_limits.py).
    model_limits: ModelLimits = field(default_factory=ModelLimits)
    #: Runtime quota overrides in force today, (org, app or "") → model id → (pico-USD, who
    #: set it); they win over the configured quotas (metering/overrides.py, proxy/admin/overrides.py).
    overrides: Mapping[tuple[str, str], Mapping[str, tuple[int, str]]] = field(
        default_factory=lambda: MappingProxyType({}))

    def serves(self, model_id: str, scope: str) -> bool:
        """Whether Bedrock serves `model_id` in `scope`; a model the table omits: yes."""
        scopes = self.model_scopes.get(base_model_id(self.base_of(model_id)))
        return scopes is None or scope in scopes

    def base_of(self, model_id: str) -> str:
        """The model id that tells family and price: a configured profile's base model,
        else the id itself (`adapters.modelid.base_model_id` strips geo prefixes and ARNs)."""
        return self.profiles.get(model_id, model_id)

    def resolve_model(self, requested: str) -> str:
        """A label names its model; anything else is already a model id, profile or ARN."""
        return self.labels.get(requested, requested)

    def for_caller(self, org: str, app: str) -> CallerPolicy:
        org_policy = self.orgs.get(org, OrgPolicy())
        app_policy = org_policy.apps.get(app, AppPolicy())
        if org_policy.scope == "APP":
            scope_key = f"{org}/{app}"
            quota = app_policy.daily_quota if app_policy.daily_quota is not None else org_policy.daily_quota
        else:
            scope_key = org
            quota = org_policy.daily_quota
        chain = app_policy.chain or org_policy.chain or self.default_chain
        # An org's override is its APP-scoped apps' default too; an app's own wins over it.
        layers = [self.overrides.get((org, ""), {})]
        if org_policy.scope == "APP":
            layers.append(self.overrides.get((org, app), {}))
        overridden: dict[str, str] = {}
        if any(layers):
            merged = dict(quota)
            for layer in layers:
                for model, (pico, who) in layer.items():
                    merged[model] = pico
                    overridden[model] = who
            quota = MappingProxyType(merged)
        return CallerPolicy(
            scope_key=scope_key,
            chain=chain,
            daily_quota=quota,
            overridden=MappingProxyType(overridden),
            max_output_tokens=app_policy.max_output_tokens,
            allowed_models=app_policy.allowed_models,
            rate_limits=app_policy.rate_limits,
            response_cache_ttl=app_policy.response_cache_ttl,
            fail_closed=org_policy.fail_closed,
            allowed_operations=_first(app_policy.allowed_operations, org_policy.allowed_operations, INFERENCE),
            allowed_s3_outputs=(app_policy.allowed_s3_outputs if app_policy.allowed_s3_outputs is not None
                                else org_policy.allowed_s3_outputs),
            allowed_service_tiers=app_policy.allowed_service_tiers,
        )


def _first(*candidates: frozenset[str] | None) -> frozenset[str]:
    return next(candidate for candidate in candidates if candidate is not None)
