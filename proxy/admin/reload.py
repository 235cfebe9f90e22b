"""Change the configuration while the proxy runs: SIGHUP, or a new config.yaml content.

`ConfigWatcher` re-reads the file the running Config was loaded from (with the
same command-line flags and environment) when the process gets SIGHUP, and every
`server.config_poll_interval` seconds when the bytes behind the resolved path
changed (a Kubernetes ConfigMap update swaps a symlink and sends no signal). The
new file is validated whole by `load_config` before anything changes: an invalid
one is logged with the key named, counted in `costkeeper_config_reload_errors_total`,
and the proxy keeps serving on the configuration it had (and stays ready).

`live_config` decides what a reload may change. Pricing, models, chains, orgs,
apps, quotas, policies, rate limits, the response cache and alerts apply from the
next request; the CostKeeper swaps one immutable runtime (proxy/app.py), so a
request in flight or an open stream finishes on the configuration it started
with. Settings bound at start-up — ports and TLS files, the store, the upstream,
authentication, metering, observability, workers — keep their value until a
restart, and a reload that changes them names them in a warning.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from metering.background import BackgroundTask
from proxy.config import Config, ConfigError
from proxy.config_load import load_config

__all__ = ["ConfigWatcher", "live_config", "public_config", "file_sha256"]

logger = logging.getLogger(__name__)

#: Config fields bound at start-up: a reload keeps the running value.
_RESTART_ONLY = ("region", "server", "upstream", "auth", "store", "metering", "simulator", "observability")
#: Fields of `limits` that sized something built once (the head-timeout protocol, the body budget).
_RESTART_ONLY_LIMITS = ("head_timeout", "max_inflight_body_bytes")
#: Fields of `quotas` the budget leases were built with (metering/leases.py).
_RESTART_ONLY_QUOTAS = ("lease_ttl",)
#: Never shown by `/v1/config`.
_SECRET_FIELDS = frozenset({"admin_token", "secret_key", "previous_secret_keys", "webhook_url", "access_key",
                            "secret_key_file", "source"})


def live_config(running: Config, loaded: Config) -> tuple[Config, list[str]]:
    """`loaded` with every restart-only setting taken from `running`, and the dotted
    names of those that differ (to be named in a warning)."""
    kept: dict[str, Any] = {}
    ignored: list[str] = []
    for name in _RESTART_ONLY:
        old, new = getattr(running, name), getattr(loaded, name)
        if old != new:
            ignored.extend(_differences(name, old, new))
        kept[name] = old
    limits = loaded.limits
    for name in _RESTART_ONLY_LIMITS:
        if getattr(running.limits, name) != getattr(limits, name):
            ignored.append(f"limits.{name}")
            limits = dataclasses.replace(limits, **{name: getattr(running.limits, name)})
    quotas = loaded.policies.quotas
    for name in _RESTART_ONLY_QUOTAS:
        if getattr(running.policies.quotas, name) != getattr(quotas, name):
            ignored.append(f"quotas.{name}")
            quotas = dataclasses.replace(quotas, **{name: getattr(running.policies.quotas, name)})
    policies = dataclasses.replace(loaded.policies, quotas=quotas)
    config = dataclasses.replace(loaded, limits=limits, policies=policies, admin_token=running.admin_token,
                                 secret_key=running.secret_key, previous_secret_keys=running.previous_secret_keys,
                                 **kept)
    return config, ignored


def _differences(name: str, old: Any, new: Any) -> list[str]:
    if dataclasses.is_dataclass(old) and dataclasses.is_dataclass(new):
        return [f"{name}.{field.name}" for field in dataclasses.fields(old)
                if getattr(old, field.name) != getattr(new, field.name)]
    return [name]


def public_config(config: Config) -> dict[str, Any]:
    """The running configuration as JSON, without a secret (`/v1/config`)."""
    body = _public(config)
    assert isinstance(body, dict)
    body["sha256"] = config.source.sha256
    body["path"] = config.source.path
    return body


def _public(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _public(getattr(value, field.name)) for field in dataclasses.fields(value)
                if field.name not in _SECRET_FIELDS}
    if isinstance(value, Mapping):
        return {str(key): _public(item) for key, item in value.items()}
    if isinstance(value, frozenset | set):
        return sorted(_public(item) for item in value)
    if isinstance(value, list | tuple):
        return [_public(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def file_sha256(path: str) -> str | None:
    """sha256 of the bytes behind `path` (symlinks followed); None if unreadable."""
    try:
        return hashlib.sha256(Path(path).resolve().read_bytes()).hexdigest()
    except OSError:
        return None


class ConfigWatcher:
    """Reloads on `trigger()` (SIGHUP) and when the file's content changes (polled)."""

    def __init__(self, current: Callable[[], Config], apply: Callable[[Config], Awaitable[None]],
                 on_error: Callable[[str], None],
                 load: Callable[..., Config] = load_config) -> None:
        self._current = current
        self._apply = apply
        self._on_error = on_error
        self._load = load
        self._wake = asyncio.Event()
        self._background = BackgroundTask("costkeeper-config-watch")
        #: The content last refused: polling does not log the same broken file again and again.
        self._refused: str | None = None

    def start(self) -> None:
        self._background.start(self._run())

    async def stop(self) -> None:
        await self._background.stop()

    def trigger(self) -> None:
        """Reload now (from a signal handler on the event loop)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            interval = self._current().server.config_poll_interval
            try:
                await asyncio.wait_for(self._wake.wait(), interval if interval > 0 else None)
                forced = True
            except TimeoutError:
                forced = False
            self._wake.clear()
            try:
                await self.check(forced=forced)
            except Exception:  # the watcher must outlive any surprise
                logger.exception("config reload failed unexpectedly; the running configuration is kept")

    async def check(self, *, forced: bool) -> bool:
        """Reload if `forced` or the file changed; True when a new configuration now runs."""
        source = self._current().source
        if source.path is None:
            if forced:
                logger.warning("SIGHUP: no config file was given (--config, COSTKEEPER_CONFIG); nothing to reload")
            return False
        if not forced:
            digest = await asyncio.to_thread(file_sha256, source.path)
            if digest is None or digest == source.sha256 or digest == self._refused:
                return False
        try:
            loaded = await asyncio.to_thread(self._load, source.path, dict(source.flags))
        except ConfigError as exc:
            self._refused = await asyncio.to_thread(file_sha256, source.path)
            logger.error("config reload refused, the running configuration is kept: %s", exc)
            self._on_error(str(exc))
            return False
        self._refused = None
        if loaded.source.sha256 == source.sha256 and not forced:
            return False
        running = self._current()
        config, ignored = live_config(running, loaded)
        if ignored:
            logger.warning("config reload: %s cannot change while running; the running value is kept until "
                           "a restart", ", ".join(ignored))
        await self._apply(config)
        logger.info("configuration reloaded from %s (sha256 %s)", source.path, config.source.sha256[:12])
        return True

