from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from proxy import config, config_checks
from proxy.config import ConfigError
from proxy.config_load import load_config

REPO = Path(__file__).resolve().parents[2]


def test_shipped_config_loads() -> None:
    config = load_config(REPO / "config.yaml", environ={})
    assert config.auth.mode == "sigv4" and "amazon.nova-micro-v1:0" in config.pricing
    assert config.upstream_url == "https://bedrock-runtime.us-east-1.amazonaws.com"


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server: {port: 1000, admin_port: 1001}\nregion: eu-west-1\n")
    config = load_config(path, flags={"port": 3000}, environ={"COSTKEEPER_PORT": "2000", "COSTKEEPER_ADMIN_PORT": "2001"})
    assert (config.server.port, config.server.admin_port, config.region) == (3000, 2001, "eu-west-1")
    assert config.upstream_url == "https://bedrock-runtime.eu-west-1.amazonaws.com"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("serve: {}", "unknown top-level key"),
        ("server: {prot: 1}", r"server: unknown key\(s\) \['prot'\]"),
        ("server: {port: eighty}", "server.port: expected a int"),
        ("auth: {mode: magic}", "auth.mode"),
        ("pricing: {m: {input: 1}}", "'input' and 'output'"),
        ("pricing: {m: {input: 1, output: -2}}", "pricing.m.output"),
        # Prices are kept as integer pico-USD per token: at most 6 decimals of USD per 1M tokens.
        ("pricing: {m: {input: 0.0000001, output: 1}}", "pricing.m.input: 1e-07 is not a whole number of pico-USD"),
        ("pricing: {m: {input: 1, output: 0.12345678}}", "pricing.m.output: 0.12345678 is not a whole number"),
        ("server: {tls_cert: a.pem}", "together"),
        ("server: {workers: 0}", "server.workers: expected at least 1"),
        ("server: {keepalive_timeout: 0}", "server.keepalive_timeout: expected seconds > 0"),
        ("server: {stream_drain_timeout: -1}", "server.stream_drain_timeout: expected seconds ≥ 0"),
        ("metering: {checkpoint_interval: -1}", "metering.checkpoint_interval: expected seconds ≥ 0"),
        ("[1, 2]", "mapping at the top level"),
        ("limits: {head_timeout: 0}", "limits.head_timeout: expected a positive number of seconds"),
        ("limits: {body_timeout: -1}", "limits.body_timeout: expected a positive number of seconds"),
        ("limits: {max_inflight_body_bytes: 1000}", r"limits.max_inflight_body_bytes \(1000\) is below"),
    ],
)
def test_bad_config_is_refused_with_the_key_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


def test_chain_step_between_untranslatable_families_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "pricing: {anthropic.claude-haiku-4-5-20251001-v1:0: {input: 1, output: 5},"
        " amazon.titan-text-express-v1: {input: 0.2, output: 0.6}}\n"
        "fallback: [anthropic.claude-haiku-4-5-20251001-v1:0, amazon.titan-text-express-v1]\n"
    )
    with pytest.raises(ConfigError, match=r"cannot fall back from anthropic\.claude.*\(anthropic\) to amazon\.titan"):
        load_config(path, environ={})


def test_slow_client_limits_and_bearer_over_http(tmp_path: Path) -> None:
    defaults = load_config(None, environ={})
    assert (defaults.limits.head_timeout, defaults.limits.body_timeout) == (20.0, 30.0)
    assert defaults.limits.max_inflight_body_bytes == 256 * 1024 * 1024
    assert defaults.auth.allow_bearer_over_http is False
    path = tmp_path / "c.yaml"
    path.write_text("limits: {head_timeout: 5, body_timeout: 7.5, max_inflight_body_bytes: 30000000}\n"
                    "auth: {allow_bearer_over_http: true}\n")
    config = load_config(path, environ={})
    assert (config.limits.head_timeout, config.limits.body_timeout) == (5.0, 7.5)
    assert config.limits.max_inflight_body_bytes == 30_000_000 and config.auth.allow_bearer_over_http is True


def test_every_field_a_check_reads_is_a_field_of_its_section() -> None:
    """proxy/config_checks.py knows each section by a protocol (so it need not import
    proxy/config.py, which imports it): each protocol's fields are the section's."""
    for protocol, section in ((config_checks._Store, config.StoreConfig), (config_checks._Metering, config.MeteringConfig),
                              (config_checks._Observability, config.ObservabilityConfig),
                              (config_checks._Limits, config.LimitsConfig), (config_checks._Upstream, config.UpstreamConfig),
                              (config_checks._Alerts, config.AlertsConfig)):
        wanted = {name for name, member in vars(protocol).items() if isinstance(member, property)}
        assert wanted and wanted <= {field.name for field in dataclasses.fields(section)}, protocol
