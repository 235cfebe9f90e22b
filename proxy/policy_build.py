"""Policies from `config.yaml`, checked at start-up: labels, chains, quotas, model scopes,
per-org and per-app settings (the rules are in `proxy/policies.py`'s docstring).

Separate from the policies themselves, which the request path reads, so that this
parsing and its refusals (each naming the key at fault) stay in one place.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from adapters.bidi import speaks_bidi
from adapters.modelid import IN_REGION, SCOPES, base_model_id, routing_scope
from metering.money import daily_quota_pico
from proxy.model_limits import ModelLimits
from proxy.policies import AppPolicy, OrgPolicy, Policies, PolicyError, QuotaSettings, RateLimit
from proxy.routing import Operation

__all__ = ["build_policies", "parse_model_scopes"]

logger = logging.getLogger(__name__)

#: Settings of the enforcement leases replaced (issue #18): accepted, ignored, warned about.
_RETIRED_QUOTA_KEYS = frozenset({"tight_threshold", "normal_ttl", "tight_ttl"})


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
