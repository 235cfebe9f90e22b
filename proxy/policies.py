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
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from adapters.bidi import speaks_bidi
from adapters.modelid import IN_REGION, SCOPES, base_model_id, routing_scope
from metering.money import daily_quota_pico
from proxy.model_limits import ModelLimits
from proxy.routing import INFERENCE, Operation

__all__ = [
    "AppPolicy",
    "OrgPolicy",
    "Policies",
    "CallerPolicy",
    "QuotaSettings",
    "RateLimit",
    "PolicyError",
    "build_policies",
    "parse_model_scopes",
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


#: Settings of the enforcement leases replaced (issue #18): accepted, ignored, warned about.
_RETIRED_QUOTA_KEYS = frozenset({"tight_threshold", "normal_ttl", "tight_ttl"})


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


def build_policies(
    *,
    models: Mapping[str, Any],
    fallback: Sequence[Any],
    orgs: Mapping[str, Any],
    quotas: Mapping[str, Any] | None,
    priced: Callable[[str], bool],
    profiles: Mapping[str, str] | None = None,
    model_scopes: Mapping[str, frozenset[str]] | None = None,
    model_limits: ModelLimits | None = None,
    family_of: Callable[[str], str],
    can_translate: Callable[[str, str], bool],
) -> Policies:
    profile_map = {str(k): str(v) for k, v in (profiles or {}).items()}
    labels = {str(label): str(model) for label, model in models.items()}
    scopes = _Scopes(model_scopes or {}, profile_map)
    for label, model in labels.items():
        if model in labels:
            raise PolicyError(f"models.{label}: a label must name a model id, not another label ({model!r})")
        scopes.check_id(f"models.{label}", model)
    checker = _ChainChecker(labels, priced, lambda m: family_of(profile_map.get(m, m)), can_translate, scopes,
                            lambda m: speaks_bidi(profile_map.get(m, m)))
    default_chain = checker.chain("fallback", fallback)
    parsed_orgs = {str(name): _org(str(name), raw or {}, labels, checker) for name, raw in orgs.items()}
    return Policies(
        labels=MappingProxyType(labels),
        default_chain=default_chain,
        orgs=MappingProxyType(parsed_orgs),
        quotas=_quota_settings(quotas or {}),
        profiles=MappingProxyType(profile_map),
        model_scopes=MappingProxyType(dict(model_scopes or {})),
        model_limits=model_limits or ModelLimits(),
    )


def parse_model_scopes(raw: Any) -> dict[str, frozenset[str]]:
    """`model_scopes` from config.yaml: base model id → list of scopes."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise PolicyError("model_scopes: expected a mapping of base model id → list of scopes")
    known = (IN_REGION, *SCOPES)
    table: dict[str, frozenset[str]] = {}
    for model, listed in raw.items():
        key = f"model_scopes.{model}"
        if base_model_id(str(model)) != str(model):
            raise PolicyError(f"{key}: expected a base model id (no profile prefix, no ARN)")
        if not isinstance(listed, list | tuple) or not listed:
            raise PolicyError(f"{key}: expected a non-empty list of scopes from {list(known)}")
        unknown = [scope for scope in listed if scope not in known]
        if unknown:
            raise PolicyError(f"{key}: unknown scope(s) {unknown}; expected some of {list(known)}")
        table[str(model)] = frozenset(str(scope) for scope in listed)
    return table


class _Scopes:
    """The start-up checks `model_scopes` makes possible (see the module docstring)."""

    def __init__(self, table: Mapping[str, frozenset[str]], profiles: Mapping[str, str]) -> None:
        self._table = table
        self._profiles = profiles

    def of(self, model_id: str) -> frozenset[str] | None:
        return self._table.get(base_model_id(self._profiles.get(model_id, model_id)))

    def check_id(self, key: str, model_id: str) -> None:
        """A configured id Bedrock would refuse: a bare id of a profile-only model, or a
        profile in a scope the model has none in."""
        scopes = self.of(model_id)
        if scopes is None or model_id in self._profiles:
            return
        scope = routing_scope(model_id)
        if scope is None and not model_id.startswith("arn:") and IN_REGION not in scopes:
            profiles = ", ".join(f"{s}.{model_id}" for s in sorted(scopes))
            raise PolicyError(f"{key}: Bedrock serves {model_id} only through inference profiles; "
                              f"name one of them instead: {profiles} (model_scopes)")
        if scope is not None and scope not in scopes:
            raise PolicyError(f"{key}: {model_id} has no `{scope}.` inference profile; its scopes are "
                              f"{sorted(scopes)} (model_scopes)")

    def check_chain(self, key: str, chain: Sequence[str]) -> None:
        """Every scope a request can reach a chain model in, its fallbacks serve too:
        a fallback keeps the request's scope, never moves it to another geography."""
        for index, model in enumerate(chain):
            entry = self.of(model)
            if entry is None:
                continue
            for later in chain[index + 1:]:
                scopes = self.of(later)
                if scopes is None:
                    continue
                missing = sorted((entry - {IN_REGION}) - scopes)
                if missing:
                    raise PolicyError(
                        f"{key}: {later} cannot serve the `{missing[0]}.` requests that fall back to it from "
                        f"{model}: it has no profile in {missing} (model_scopes). List "
                        f"{base_model_id(self._profiles.get(model, model))} in model_scopes with only "
                        f"the scopes this chain serves, or change the chain"
                    )


class _ChainChecker:
    def __init__(self, labels: Mapping[str, str], priced: Callable[[str], bool],
                 family_of: Callable[[str], str], can_translate: Callable[[str, str], bool],
                 scopes: _Scopes, speaks_bidi: Callable[[str], bool] = lambda model: False) -> None:
        self._speaks_bidi = speaks_bidi
        self._scopes = scopes
        self._labels = labels
        self._priced = priced
        self._family_of = family_of
        self._can_translate = can_translate

    def model(self, key: str, name: Any) -> str:
        name = str(name)
        if name in self._labels:
            return self._labels[name]
        if "." not in name and ":" not in name:
            raise PolicyError(f"{key}: unknown label {name!r}; labels are {sorted(self._labels)}")
        return name

    def chain(self, key: str, raw: Any) -> tuple[str, ...]:
        if not isinstance(raw, list | tuple):
            raise PolicyError(f"{key}: expected a list of labels or model ids")
        chain = tuple(self.model(key, item) for item in raw)
        for index, model in enumerate(chain):
            self._scopes.check_id(f"{key}[{index}]", model)
        self._scopes.check_chain(key, chain)
        seen: set[str] = set()
        for model in chain:
            base = base_model_id(model)
            if base in seen:
                raise PolicyError(f"{key}: cycle in the chain: {model} appears twice ({' → '.join(chain)})")
            seen.add(base)
            if not self._priced(model):
                raise PolicyError(f"{key}: chain model {model} has no price in `pricing`; "
                                  f"its spend could not be counted against a quota")
        self._check_protocol(key, chain)
        for source, target in zip(chain, chain[1:], strict=False):
            source_family, target_family = self._family_of(source), self._family_of(target)
            if source_family != target_family and not self._can_translate(source_family, target_family):
                raise PolicyError(f"{key}: cannot fall back from {source} ({source_family}) to "
                                  f"{target} ({target_family}): no translation between these families")
        return chain

    def _check_protocol(self, key: str, chain: tuple[str, ...]) -> None:
        """A bidirectional stream cannot be rewritten for another protocol: a chain that
        serves one only falls back to models that speak it too (adapters/bidi.py)."""
        bidi = [model for model in chain if self._speaks_bidi(model)]
        if bidi and len(bidi) != len(chain):
            others = [model for model in chain if model not in bidi]
            raise PolicyError(
                f"{key}: the chain mixes models of InvokeModelWithBidirectionalStream ({', '.join(bidi)}) with "
                f"models that do not speak it ({', '.join(others)}); a bidirectional stream can only fall back "
                f"to a model of the same protocol")


def _usd_quotas(key: str, raw: Any, checker: _ChainChecker) -> Mapping[str, int]:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{key}: expected a mapping of label or model id → USD per day")
    quotas: dict[str, int] = {}
    for name, usd in raw.items():
        if not isinstance(usd, int | float) or isinstance(usd, bool) or usd < 0:
            raise PolicyError(f"{key}.{name}: expected a non-negative number of USD, got {usd!r}")
        model = checker.model(key, name)
        try:
            quotas[model] = daily_quota_pico(usd, f"{key}.{name}")
        except ValueError as exc:
            raise PolicyError(str(exc)) from None
    return MappingProxyType(quotas)


_ORG_KEYS = {"quota_scope", "daily_quota_usd", "fallback", "fail_closed", "apps", "allowed_operations",
             "allowed_s3_outputs"}
_APP_KEYS = {"fallback", "daily_quota_usd", "max_output_tokens", "allowed_models", "rate_limits", "response_cache",
             "allowed_operations", "allowed_s3_outputs", "allowed_service_tiers"}
_SERVICE_TIERS = ("default", "priority", "flex", "reserved")
_OPERATIONS = frozenset(str(operation) for operation in Operation)


def _first(*candidates: frozenset[str] | None) -> frozenset[str]:
    return next(candidate for candidate in candidates if candidate is not None)


def _operations(key: str, raw: Mapping[str, Any]) -> frozenset[str] | None:
    """`allowed_operations`: Bedrock Runtime operation names, as in the API reference."""
    listed = raw.get("allowed_operations")
    if listed is None:
        return None
    if not isinstance(listed, list | tuple) or not all(isinstance(name, str) for name in listed):
        raise PolicyError(f"{key}.allowed_operations: expected a list of operation names")
    unknown = sorted(set(listed) - _OPERATIONS)
    if unknown:
        raise PolicyError(f"{key}.allowed_operations: unknown operation(s) {unknown}; expected some of "
                          f"{sorted(_OPERATIONS)}")
    return frozenset(listed)


def _s3_outputs(key: str, raw: Mapping[str, Any]) -> tuple[str, ...] | None:
    """`allowed_s3_outputs`: `s3://bucket/` or `s3://bucket/prefix/` locations; a
    trailing `/` is added, so `s3://b/team` never lets a job write to `s3://b/team-other`."""
    listed = raw.get("allowed_s3_outputs")
    if listed is None:
        return None
    if not isinstance(listed, list | tuple):
        raise PolicyError(f"{key}.allowed_s3_outputs: expected a list of s3://bucket/prefix/ locations")
    prefixes = []
    for location in listed:
        if not isinstance(location, str) or not location.startswith("s3://") or len(location.rstrip("/")) <= 5:
            raise PolicyError(f"{key}.allowed_s3_outputs: expected s3://bucket/prefix/ locations, got {location!r}")
        prefixes.append(location.rstrip("/") + "/")
    return tuple(prefixes)


def _org(name: str, raw: Mapping[str, Any], labels: Mapping[str, str], checker: _ChainChecker) -> OrgPolicy:
    key = f"orgs.{name}"
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{key}: expected a mapping")
    unknown = set(raw) - _ORG_KEYS
    if unknown:
        raise PolicyError(f"{key}: unknown key(s) {sorted(unknown)}; expected {sorted(_ORG_KEYS)}")
    scope = str(raw.get("quota_scope", "ORG")).upper()
    if scope not in ("ORG", "APP"):
        raise PolicyError(f"{key}.quota_scope: expected ORG or APP, got {raw.get('quota_scope')!r}")
    apps_raw = raw.get("apps") or {}
    if not isinstance(apps_raw, Mapping):
        raise PolicyError(f"{key}.apps: expected a mapping of app name → settings")
    return OrgPolicy(
        scope=scope,  # type: ignore[arg-type]
        chain=checker.chain(f"{key}.fallback", raw["fallback"]) if "fallback" in raw else None,
        daily_quota=_usd_quotas(f"{key}.daily_quota_usd", raw.get("daily_quota_usd") or {}, checker),
        fail_closed=bool(raw.get("fail_closed", False)),
        allowed_operations=_operations(key, raw),
        allowed_s3_outputs=_s3_outputs(key, raw),
        apps=MappingProxyType({str(app): _app(f"{key}.apps.{app}", app_raw or {}, checker)
                               for app, app_raw in apps_raw.items()}),
    )


def _app(key: str, raw: Mapping[str, Any], checker: _ChainChecker) -> AppPolicy:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{key}: expected a mapping")
    unknown = set(raw) - _APP_KEYS
    if unknown:
        raise PolicyError(f"{key}: unknown key(s) {sorted(unknown)}; expected {sorted(_APP_KEYS)}")
    max_output = raw.get("max_output_tokens")
    if max_output is not None and (not isinstance(max_output, int) or max_output < 1):
        raise PolicyError(f"{key}.max_output_tokens: expected a positive integer, got {max_output!r}")
    allowed = raw.get("allowed_models")
    cache = raw.get("response_cache")
    cache_ttl = None
    if cache is not None:
        if not isinstance(cache, Mapping) or not isinstance(cache.get("ttl"), int | float) or cache["ttl"] <= 0:
            raise PolicyError(f"{key}.response_cache: expected {{ttl: <seconds > 0>}}")
        cache_ttl = float(cache["ttl"])
    return AppPolicy(
        chain=checker.chain(f"{key}.fallback", raw["fallback"]) if "fallback" in raw else None,
        daily_quota=_usd_quotas(f"{key}.daily_quota_usd", raw["daily_quota_usd"], checker)
        if "daily_quota_usd" in raw else None,
        max_output_tokens=max_output,
        allowed_models=frozenset(checker.model(f"{key}.allowed_models", m) for m in allowed)
        if allowed is not None else None,
        rate_limits=MappingProxyType(_rate_limits(f"{key}.rate_limits", raw.get("rate_limits") or {}, checker)),
        response_cache_ttl=cache_ttl,
        allowed_operations=_operations(key, raw),
        allowed_s3_outputs=_s3_outputs(key, raw),
        allowed_service_tiers=_service_tiers(f"{key}.allowed_service_tiers", raw.get("allowed_service_tiers")),
    )


def _service_tiers(key: str, raw: Any) -> frozenset[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list | tuple) or not all(tier in _SERVICE_TIERS for tier in raw):
        raise PolicyError(f"{key}: expected a list of service tiers from {list(_SERVICE_TIERS)}, got {raw!r}")
    return frozenset(str(tier) for tier in raw)


def _rate_limits(key: str, raw: Any, checker: _ChainChecker) -> dict[str, RateLimit]:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{key}: expected a mapping of label or model id → {{tpm, rpm}}")
    limits = {}
    for name, spec in raw.items():
        if not isinstance(spec, Mapping) or set(spec) - {"tpm", "rpm"}:
            raise PolicyError(f"{key}.{name}: expected {{tpm: N, rpm: N}}")
        for which in ("tpm", "rpm"):
            value = spec.get(which)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise PolicyError(f"{key}.{name}.{which}: expected a positive integer, got {value!r}")
        limits[checker.model(key, name)] = RateLimit(tpm=spec.get("tpm"), rpm=spec.get("rpm"))
    return limits


def _quota_settings(raw: Mapping[str, Any]) -> QuotaSettings:
    known = set(QuotaSettings.__dataclass_fields__)
    unknown = set(raw) - known - _RETIRED_QUOTA_KEYS
    if unknown:
        raise PolicyError(f"quotas: unknown key(s) {sorted(unknown)}; expected {sorted(known)}")
    retired = sorted(set(raw) & _RETIRED_QUOTA_KEYS)
    if retired:
        logger.warning("quotas: %s no longer apply (budget leases enforce quotas; see README \"Quotas and "
                       "fallback\") and are ignored", ", ".join(retired))
    try:
        settings = QuotaSettings(**{k: type(getattr(QuotaSettings(), k))(v) for k, v in raw.items() if k in known})
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"quotas: {exc}") from None
    if not (math.isfinite(settings.lease_ttl) and settings.lease_ttl > 0):
        raise PolicyError(f"quotas.lease_ttl: expected seconds > 0, got {settings.lease_ttl}")
    if settings.default_max_output_tokens < 1:
        raise PolicyError(f"quotas.default_max_output_tokens: expected a positive integer, "
                          f"got {settings.default_max_output_tokens}")
    return settings
