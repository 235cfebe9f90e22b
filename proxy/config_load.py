"""Build the one `Config` (proxy/config.py) from config.yaml, the environment and flags.

Precedence: command-line flag > `COSTKEEPER_*` environment variable > `config.yaml`
> default. This is the only module that reads the environment. Every value is checked
here (or in `proxy/config_checks.py`) before the proxy starts or a reload applies it:
an invalid file is refused whole, with a `ConfigError` naming the key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from adapters import family_of
from adapters.translate import can_translate
from metering.pricing import Price, PriceTable
from metering.secret_box import decode_key
from metering.unit_prices import UnitPrice, is_unit_price
from proxy.config import (
    AlertsConfig,
    AttributionConfig,
    AuthConfig,
    Config,
    ConfigSource,
    LimitsConfig,
    MeteringConfig,
    ObservabilityConfig,
    ServerConfig,
    SimulatorConfig,
    StoreConfig,
    UpstreamConfig,
)
from proxy.config_checks import (
    ConfigError,
    check_alerts,
    check_attribution,
    check_emf,
    check_limits,
    check_regions,
    check_store,
    section,
)
from proxy.model_limits import parse_model_limits
from proxy.policies import PolicyError
from proxy.policy_build import build_policies, parse_model_scopes

__all__ = ["FLAG_KEYS", "load_config"]

#: Command-line flag (argparse dest) → dotted config key. Each flag's environment
#: twin is COSTKEEPER_<FLAG>, e.g. --admin-port ↔ COSTKEEPER_ADMIN_PORT.
FLAG_KEYS: Mapping[str, str] = MappingProxyType({
    "host": "server.host",
    "port": "server.port",
    "admin_host": "server.admin_host",
    "admin_port": "server.admin_port",
    "tls_cert": "server.tls_cert",
    "tls_key": "server.tls_key",
    "log_level": "server.log_level",
    "workers": "server.workers",
    "region": "region",
    "upstream_endpoint_url": "upstream.endpoint_url",
    "auth_mode": "auth.mode",
    "store_path": "store.path",
    "store_backend": "store.backend",
    "store_table": "store.table",
    "store_endpoint_url": "store.endpoint_url",
    "journal_dir": "store.journal_dir",
    "secret_key_file": "store.secret_key_file",
    "kms_key_id": "store.kms_key_id",
    "sim_host": "simulator.host",
    "sim_port": "simulator.port",
    "sim_access_key": "simulator.access_key",
    "sim_secret_key": "simulator.secret_key",
    "latency": "simulator.latency",
    "chunk_delay": "simulator.chunk_delay",
    "throttle_rate": "simulator.throttle_rate",
    "error_rate": "simulator.error_rate",
    "seed": "simulator.seed",
    "sim_region": "simulator.region",
    "alerts_webhook_url": "alerts.webhook_url",
})

_SECTIONS: Mapping[str, type] = MappingProxyType({
    "server": ServerConfig,
    "upstream": UpstreamConfig,
    "auth": AuthConfig,
    "store": StoreConfig,
    "limits": LimitsConfig,
    "metering": MeteringConfig,
    "simulator": SimulatorConfig,
    "observability": ObservabilityConfig,
    "alerts": AlertsConfig,
    "attribution": AttributionConfig,
})


def load_config(
    path: str | os.PathLike[str] | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the Config from a YAML file, the environment and command-line flags."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("COSTKEEPER_CONFIG")
    raw: dict[str, Any] = {}
    digest = ""
    if path:
        try:
            content = Path(path).read_bytes()
            digest = hashlib.sha256(content).hexdigest()
            loaded = yaml.safe_load(content) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping at the top level")
        raw = loaded
    for flag, key in FLAG_KEYS.items():
        env_value = environ.get(f"COSTKEEPER_{flag.upper()}")
        if env_value is not None and env_value != "":
            _set_dotted(raw, key, env_value)
    for flag, value in (flags or {}).items():
        if value is not None and flag in FLAG_KEYS:
            _set_dotted(raw, FLAG_KEYS[flag], value)
    given = {flag: value for flag, value in (flags or {}).items() if value is not None and flag in FLAG_KEYS}
    config = replace(_build(raw), source=ConfigSource(str(path) if path else None, MappingProxyType(given), digest))
    token = environ.get("COSTKEEPER_ADMIN_TOKEN") or None
    config = replace(config, admin_token=token) if token else config
    return _with_secret_keys(config, environ)


def _with_secret_keys(config: Config, environ: Mapping[str, str]) -> Config:
    """The keys for issued secrets come from the environment only, like the admin
    token: a flag shows in `ps`, and config.yaml ends up in Git. At most one source
    of the current key: two would let replicas encrypt with different keys."""
    current = environ.get("COSTKEEPER_SECRET_KEY", "")
    previous = [part for part in environ.get("COSTKEEPER_SECRET_KEY_PREVIOUS", "").split(",") if part.strip()]
    try:
        key = decode_key(current, "COSTKEEPER_SECRET_KEY") if current.strip() else None
        old = tuple(decode_key(part, f"COSTKEEPER_SECRET_KEY_PREVIOUS (key {index + 1})")
                    for index, part in enumerate(previous))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    store = config.store
    sources = [name for name, present in (("COSTKEEPER_SECRET_KEY", key is not None),
                                          ("store.kms_key_id", bool(store.kms_key_id)),
                                          ("store.secret_key_file", bool(store.secret_key_file))) if present]
    if len(sources) > 1:
        raise ConfigError(f"{' and '.join(sources)}: alternative keys for issued secrets; set only one "
                          "(a previous key goes in COSTKEEPER_SECRET_KEY_PREVIOUS)")
    return replace(config, secret_key=key, previous_secret_keys=old)


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[last] = value


def _build(raw: Mapping[str, Any]) -> Config:
    known = {"region", "pricing", "models", "fallback", "orgs", "quotas", "inference_profiles", "model_scopes",
             "model_limits", *_SECTIONS}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {sorted(unknown)}; expected {sorted(known)}")
    sections = {name: section(name, cls, raw.get(name)) for name, cls in _SECTIONS.items()}
    auth = sections["auth"]
    if auth.mode not in ("sigv4", "bearer", "trust"):
        raise ConfigError(f"auth.mode: expected sigv4, bearer or trust, got {auth.mode!r}")
    check_store(sections["store"], sections["metering"])
    check_limits(sections["limits"])
    check_emf(sections["observability"])
    sections["alerts"] = check_alerts(sections["alerts"])
    sections["attribution"] = check_attribution(sections["attribution"])
    server = sections["server"]
    if bool(server.tls_cert) != bool(server.tls_key):
        raise ConfigError("server.tls_cert and server.tls_key must be given together")
    if server.keepalive_timeout <= 0:
        raise ConfigError(f"server.keepalive_timeout: expected seconds > 0, got {server.keepalive_timeout}")
    if server.stream_drain_timeout < 0:
        raise ConfigError(f"server.stream_drain_timeout: expected seconds ≥ 0, got {server.stream_drain_timeout}")
    if server.config_poll_interval < 0:
        raise ConfigError(f"server.config_poll_interval: expected seconds ≥ 0, got {server.config_poll_interval}")
    if server.workers < 1:
        raise ConfigError(f"server.workers: expected at least 1, got {server.workers}")
    region = str(raw.get("region") or "us-east-1")
    sections["upstream"] = check_regions(sections["upstream"], region)
    pricing_raw = raw.get("pricing") or {}
    if not isinstance(pricing_raw, dict):
        raise ConfigError("pricing: expected a mapping of model id → prices")
    try:
        unit_pricing = {str(model): UnitPrice.from_mapping(str(model), prices)
                        for model, prices in pricing_raw.items() if isinstance(prices, dict) and is_unit_price(prices)}
        pricing = {str(model): Price.from_mapping(str(model), prices or {})
                   for model, prices in pricing_raw.items() if str(model) not in unit_pricing}
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    models = raw.get("models") or {}
    if not isinstance(models, dict):
        raise ConfigError("models: expected a mapping of label → model id")
    fallback = raw.get("fallback") or []
    if not isinstance(fallback, list):
        raise ConfigError("fallback: expected a list of labels or model ids")
    orgs = raw.get("orgs") or {}
    if not isinstance(orgs, dict):
        raise ConfigError("orgs: expected a mapping of org name → settings")
    quotas = raw.get("quotas") or {}
    if not isinstance(quotas, dict):
        raise ConfigError("quotas: expected a mapping")
    profiles = raw.get("inference_profiles") or {}
    if not isinstance(profiles, dict) or not all(isinstance(v, str) for v in profiles.values()):
        raise ConfigError("inference_profiles: expected a mapping of profile ARN or id → base model id")
    prices = PriceTable(pricing, profiles)
    try:
        policies = build_policies(
            models=models, fallback=fallback, orgs=orgs, quotas=quotas, profiles=profiles,
            model_scopes=parse_model_scopes(raw.get("model_scopes")),
            model_limits=parse_model_limits(raw.get("model_limits")),
            priced=lambda model: prices.price_of(model) is not None,
            family_of=family_of, can_translate=can_translate,
        )
    except (PolicyError, TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    return Config(
        policies=policies,
        region=region,
        pricing=MappingProxyType(pricing),
        unit_pricing=MappingProxyType(unit_pricing),
        models=MappingProxyType({str(k): str(v) for k, v in models.items()}),
        fallback=tuple(str(x) for x in fallback),
        orgs=MappingProxyType(dict(orgs)),
        **sections,
    )
