"""What a config reload may change, and what `/v1/config` shows (proxy/admin/reload.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import yaml

from proxy.admin.reload import ConfigWatcher, live_config, public_config
from proxy.config import Config
from proxy.config_load import load_config


def _load(tmp_path: Path, document: dict[str, object], environ: dict[str, str] | None = None) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_config(path, environ=environ or {})


def test_restart_only_settings_keep_their_value_and_are_named(tmp_path: Path) -> None:
    running = _load(tmp_path, {"server": {"port": 9000}, "limits": {"head_timeout": 20},
                               "quotas": {"lease_ttl": 20}, "pricing": {"amazon.nova-lite-v1:0": {"input": 1, "output": 1}}})
    loaded = _load(tmp_path, {"server": {"port": 9001}, "limits": {"head_timeout": 5, "max_body_bytes": 1000},
                              "quotas": {"lease_ttl": 9, "default_max_output_tokens": 100},
                              "store": {"path": "elsewhere.db"},
                              "pricing": {"amazon.nova-lite-v1:0": {"input": 2, "output": 2}}})
    config, ignored = live_config(running, loaded)
    assert sorted(ignored) == ["limits.head_timeout", "quotas.lease_ttl", "server.port", "store.path"]
    assert config.server.port == 9000 and config.store.path == running.store.path
    assert config.limits.head_timeout == 20 and config.limits.max_body_bytes == 1000
    assert config.policies.quotas.lease_ttl == 20 and config.policies.quotas.default_max_output_tokens == 100
    assert config.pricing == loaded.pricing
    assert config.source.sha256 == loaded.source.sha256 != running.source.sha256


def test_public_config_holds_no_secret(tmp_path: Path) -> None:
    config = _load(tmp_path, {"alerts": {"webhook_url": "https://hooks.example/SECRET-HOOK"}},
                   {"COSTKEEPER_ADMIN_TOKEN": "SECRET-TOKEN", "COSTKEEPER_SECRET_KEY": "A" * 43 + "="})
    shown = json.dumps(public_config(config))
    assert "SECRET" not in shown and "A" * 43 not in shown
    assert json.loads(shown)["sha256"] == config.source.sha256


def test_an_invalid_file_is_refused_once_and_nothing_changes(tmp_path: Path) -> None:
    running = [_load(tmp_path, {"orgs": {"acme": {"daily_quota_usd": {"amazon.nova-lite-v1:0": 1}}}})]
    errors: list[str] = []

    async def apply(config: Config) -> None:
        running.append(config)

    watcher = ConfigWatcher(lambda: running[-1], apply, errors.append)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"orgs": {"acme": {"daily_quota_usd": {"x.y": -1}}}}))
    assert not asyncio.run(watcher.check(forced=False))
    assert len(running) == 1 and len(errors) == 1 and "orgs.acme.daily_quota_usd" in errors[0]
    assert not asyncio.run(watcher.check(forced=False))  # the same broken content: not again
    assert len(errors) == 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"pricing": {"amazon.nova-lite-v1:0": {"input": 3, "output": 3}}}))
    assert asyncio.run(watcher.check(forced=False))
    assert len(running) == 2 and "amazon.nova-lite-v1:0" in running[-1].pricing
