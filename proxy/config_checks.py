"""Checks and coercions of `proxy/config.py`'s sections: what a YAML value, an
environment string or a flag must be before it becomes a typed field.

Kept apart so the config module holds the shape of the configuration, and this
one what is refused and why (every refusal is a `ConfigError` naming the key). The
config module imports this one; this one knows a section only by the fields it checks
(the protocols below, which the config module's dataclasses meet), so the two never
import each other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import Field, fields, replace
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, TypeVar

__all__ = ["ConfigError", "check_alerts", "check_attribution", "check_emf", "check_limits", "check_regions", "check_store", "section"]

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$")


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the offending key."""


# What each check reads of its section (proxy/config.py's frozen dataclasses).

class _Section(Protocol):
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]


class _Store(Protocol):
    @property
    def backend(self) -> str: ...
    @property
    def table(self) -> str: ...
    @property
    def index_name(self) -> str: ...
    @property
    def shards(self) -> int: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def consolidation_interval(self) -> float: ...
    @property
    def retry_base(self) -> float: ...
    @property
    def retry_max(self) -> float: ...


class _Metering(Protocol):
    @property
    def batch_size(self) -> int: ...
    @property
    def flush_interval(self) -> float: ...
    @property
    def fsync_interval(self) -> float: ...
    @property
    def checkpoint_interval(self) -> float: ...


class _Observability(Protocol):
    @property
    def emf_namespace(self) -> str: ...
    @property
    def emf_dimensions(self) -> Mapping[str, str]: ...


class _Limits(Protocol):
    """Its other limits are read by name (`getattr`)."""

    @property
    def max_body_bytes(self) -> int: ...
    @property
    def max_inflight_body_bytes(self) -> int: ...


class _Upstream(_Section, Protocol):
    @property
    def regions(self) -> tuple[str, ...]: ...
    @property
    def endpoint_urls(self) -> Mapping[str, str]: ...


class _Alerts(_Section, Protocol):
    @property
    def webhook_url(self) -> str | None: ...
    @property
    def thresholds(self) -> tuple[float, ...]: ...
    @property
    def hourly_cost_usd(self) -> float | None: ...
    @property
    def check_interval(self) -> float: ...
    @property
    def timeout(self) -> float: ...
    @property
    def retries(self) -> int: ...


class _Attribution(_Section, Protocol):
    @property
    def request_metadata_keys(self) -> tuple[str, ...]: ...
    @property
    def max_tag_values(self) -> int: ...


_U = TypeVar("_U", bound=_Upstream)
_T = TypeVar("_T", bound=_Attribution)
_A = TypeVar("_A", bound=_Alerts)


def check_store(store: _Store, metering: _Metering) -> None:
    if store.backend not in ("sqlite", "dynamodb"):
        raise ConfigError(f"store.backend: expected sqlite or dynamodb, got {store.backend!r}")
    if store.backend == "dynamodb" and not store.table:
        raise ConfigError("store.table: a DynamoDB table name is required")
    if store.backend == "dynamodb" and not re.fullmatch(r"[A-Za-z0-9_.-]{3,255}", store.index_name):
        raise ConfigError(f"store.index_name: a DynamoDB index name is 3 to 255 of A-Z a-z 0-9 _ . -, "
                          f"got {store.index_name[:300]!r}")
    for key, value in (("store.shards", store.shards), ("store.max_attempts", store.max_attempts),
                       ("metering.batch_size", metering.batch_size)):
        if value < 1:
            raise ConfigError(f"{key}: expected at least 1, got {value}")
    for key, number in (("store.consolidation_interval", store.consolidation_interval),
                        ("store.retry_base", store.retry_base), ("store.retry_max", store.retry_max),
                        ("metering.flush_interval", metering.flush_interval),
                        ("metering.fsync_interval", metering.fsync_interval)):
        if number <= 0:
            raise ConfigError(f"{key}: expected a positive number of seconds, got {number}")
    if metering.checkpoint_interval < 0:
        raise ConfigError(f"metering.checkpoint_interval: expected seconds ≥ 0, got {metering.checkpoint_interval}")


#: Names an EMF line already uses (proxy/eventlog.py): a dimension may not take one.
_EMF_TAKEN = {"ModelId", "RequestId", "Org", "App", "_aws", "InputTokens", "OutputTokens", "TotalTokens",
              "CachedResponses", "ResponseLatency", "CacheReadTokens", "CacheCreationTokens", "BedrockCost",
              "BedrockAPILatency"}


def check_emf(observability: _Observability) -> None:
    """CloudWatch takes a namespace of 1–255 characters and at most 30 dimensions, each
    a name and a non-empty string value; a name must not shadow a metric of the line."""
    if not 1 <= len(observability.emf_namespace) <= 255 or observability.emf_namespace.startswith(":"):
        raise ConfigError(f"observability.emf_namespace: expected 1 to 255 characters, got "
                          f"{observability.emf_namespace!r}")
    dimensions = observability.emf_dimensions
    if len(dimensions) > 29:
        raise ConfigError("observability.emf_dimensions: at most 29 (with ModelId, CloudWatch's 30)")
    for name, value in dimensions.items():
        if not isinstance(name, str) or not name or name in _EMF_TAKEN:
            raise ConfigError(f"observability.emf_dimensions: {name!r} is not a free dimension name")
        if not isinstance(value, str) or not value:
            raise ConfigError(f"observability.emf_dimensions.{name}: expected a non-empty string, got {value!r}")


def check_limits(limits: _Limits) -> None:
    for key in ("max_body_bytes", "max_usage_body_bytes", "max_header_bytes", "max_header_count",
                "max_concurrent_streams"):
        if getattr(limits, key) < 1:
            raise ConfigError(f"limits.{key}: expected at least 1, got {getattr(limits, key)}")
    for key in ("hangup_tail_seconds", "hangup_tail_bytes"):
        if getattr(limits, key) < 0:
            raise ConfigError(f"limits.{key}: expected 0 (off) or more, got {getattr(limits, key)}")
    for key in ("head_timeout", "body_timeout"):
        if getattr(limits, key) <= 0:
            raise ConfigError(f"limits.{key}: expected a positive number of seconds, got {getattr(limits, key)}")
    if limits.max_inflight_body_bytes < limits.max_body_bytes:
        raise ConfigError(f"limits.max_inflight_body_bytes ({limits.max_inflight_body_bytes}) is below "
                          f"limits.max_body_bytes ({limits.max_body_bytes}): a body of the largest allowed "
                          "size could never be read")


def check_regions(upstream: _U, region: str) -> _U:
    """`upstream.regions` and `upstream.endpoint_urls` name real-looking Regions; the home
    Region is always allowed (a client that signs for it is served as before)."""
    regions = tuple(dict.fromkeys(str(r).strip() for r in upstream.regions if str(r).strip()))
    for name in (region, *regions, *upstream.endpoint_urls):
        if not _REGION.match(str(name)):
            raise ConfigError(f"upstream.regions / region: {name!r} is not an AWS Region name (e.g. eu-west-1)")
    for name, url in upstream.endpoint_urls.items():
        if not str(url).startswith(("http://", "https://")):
            raise ConfigError(f"upstream.endpoint_urls.{name}: expected an http(s) URL, got {url!r}")
    if regions and region not in regions:
        regions = (region, *regions)
    return replace(upstream, regions=regions,
                   endpoint_urls=MappingProxyType({str(k): str(v) for k, v in upstream.endpoint_urls.items()}))


def check_alerts(alerts: _A) -> _A:
    """YAML lists and env strings → the typed fields; out-of-range values are refused."""
    try:
        thresholds = tuple(sorted({float(x) for x in alerts.thresholds if str(x).strip()}))
        hourly = None if alerts.hourly_cost_usd is None else float(alerts.hourly_cost_usd)
    except (TypeError, ValueError):
        raise ConfigError(f"alerts.thresholds / alerts.hourly_cost_usd: expected numbers, got "
                          f"{alerts.thresholds!r} / {alerts.hourly_cost_usd!r}") from None
    if any(t <= 0 for t in thresholds):
        raise ConfigError(f"alerts.thresholds: expected shares of the quota above 0, got {list(thresholds)}")
    if hourly is not None and hourly <= 0:
        raise ConfigError(f"alerts.hourly_cost_usd: expected a positive amount, got {hourly}")
    for key, number in (("alerts.check_interval", alerts.check_interval), ("alerts.timeout", alerts.timeout)):
        if number <= 0:
            raise ConfigError(f"{key}: expected a positive number of seconds, got {number}")
    if alerts.retries < 0:
        raise ConfigError(f"alerts.retries: expected 0 or more, got {alerts.retries}")
    return replace(alerts, thresholds=thresholds, hourly_cost_usd=hourly, webhook_url=alerts.webhook_url or None)


def section(name: str, cls: type, raw: Any) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a mapping")
    defaults = cls()
    names = {f.name for f in fields(defaults)}
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {sorted(unknown)}; expected {sorted(names)}")
    return cls(**{key: _coerce(f"{name}.{key}", getattr(defaults, key), value) for key, value in raw.items()})


def _coerce(key: str, default: Any, value: Any) -> Any:
    """Turn env/flag strings into the field's type (the default tells the type)."""
    if value is None:
        return None
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)):
                raise TypeError(value)
            return tuple(items)
        if isinstance(default, Mapping):
            if not isinstance(value, Mapping):
                raise TypeError(value)
            return MappingProxyType(dict(value))
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a {type(default).__name__}, got {value!r}") from None
    return str(value) if not isinstance(value, str) else value


#: A tag key is also a header name's end (`x-costkeeper-tag-<key>`) and part of store keys.
_TAG_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: One DynamoDB item (≤ 400 KB) holds a day's kept values: 1,000 of 64 characters fit
#: even when every character takes 4 bytes of UTF-8.
_MAX_TAG_VALUES = 1_000


def check_attribution(attribution: _T) -> _T:
    """Keys usable as header names, distinct even ignoring case (headers are
    case-insensitive); a bound of 1 to 1,000 values."""
    keys = tuple(str(key).strip() for key in attribution.request_metadata_keys if str(key).strip())
    for key in keys:
        if not _TAG_KEY.match(key):
            raise ConfigError(f"attribution.request_metadata_keys: {key!r} is not a tag key "
                              "(1 to 64 letters, digits, '_', '.' or '-')")
    folded = [key.lower() for key in keys]
    if len(set(folded)) != len(folded):
        raise ConfigError(f"attribution.request_metadata_keys: keys differ only by case or repeat: {list(keys)}")
    if not 1 <= attribution.max_tag_values <= _MAX_TAG_VALUES:
        raise ConfigError(f"attribution.max_tag_values: expected 1 to {_MAX_TAG_VALUES}, got "
                          f"{attribution.max_tag_values}")
    return replace(attribution, request_metadata_keys=keys)
