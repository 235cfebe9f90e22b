"""TLS with bearer tokens, trust mode, the admin port, the usage report, hang-ups."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import httpx
import pytest

from tests.e2e.clients import NOVA, bedrock_client, wait_for_event
from tests.processes import Process, Proxy, costkeeper, start_proxy
from tests.tls import self_signed

MESSAGES = [{"role": "user", "content": [{"text": "hello"}]}]


def test_tls_and_boto3_bearer_token(tmp_path: Path, simulator: Process, monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 sends Bedrock API keys only over HTTPS: with --tls-cert/--tls-key it works."""
    cert, key = self_signed(tmp_path)
    proxy = start_proxy(tmp_path, simulator.url, extra_args=("--tls-cert", str(cert), "--tls-key", str(key)))
    try:
        issued = proxy.issue_key("acme", "tls-app")
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", issued["AWS_BEARER_TOKEN_BEDROCK"])
        monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
        endpoint = proxy.url.replace("127.0.0.1", "localhost")
        client = boto3.session.Session(region_name="us-east-1").client(
            "bedrock-runtime", endpoint_url=endpoint, verify=str(cert),
            config=botocore.config.Config(retries={"total_max_attempts": 1}),
        )
        response = client.converse(modelId=NOVA, messages=MESSAGES)
        event = wait_for_event(proxy, response["ResponseMetadata"]["RequestId"])
        assert (event.org, event.app, event.output_tokens) == ("acme", "tls-app", response["usage"]["outputTokens"])
    finally:
        proxy.stop()


def test_trust_mode_attributes_unsigned_requests(tmp_path: Path, simulator: Process) -> None:
    """A sidecar: requests need no signature (as Claude Code's CLAUDE_CODE_SKIP_BEDROCK_AUTH
    sends them) and belong to the configured app; the upstream still gets a valid signature."""
    proxy = start_proxy(tmp_path, simulator.url, {"auth": {"mode": "trust", "trust_org": "team", "trust_app": "svc"}})
    try:
        body = json.dumps({"messages": MESSAGES}).encode()
        response = httpx.post(f"{proxy.url}/model/us.amazon.nova-micro-v1:0/converse", content=body,
                              headers={"content-type": "application/json"}, timeout=10)
        assert response.status_code == 200, response.text
        event = wait_for_event(proxy, response.headers["x-amzn-requestid"])
        assert (event.org, event.app, event.output_tokens) == ("team", "svc", response.json()["usage"]["outputTokens"])
    finally:
        proxy.stop()


def test_admin_port_health_and_readiness(proxy: Proxy) -> None:
    assert httpx.get(f"{proxy.admin_url}/healthz", timeout=5).status_code == 200
    ready = httpx.get(f"{proxy.admin_url}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    # The admin endpoints are not on the data port (that one only speaks Bedrock).
    assert httpx.get(f"{proxy.url}/healthz", timeout=5).status_code == 404


def test_usage_report_matches_the_metered_events(proxy: Proxy, caller_key: dict[str, str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    key = proxy.issue_key("report-org", "report-app")
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", proxy.url)
    client = bedrock_client(key)
    totals = [0, 0]
    for prompt in ("one", "two two", "three three three"):
        response = client.converse(modelId=NOVA, messages=[{"role": "user", "content": [{"text": prompt}]}])
        wait_for_event(proxy, response["ResponseMetadata"]["RequestId"])
        totals[0] += response["usage"]["inputTokens"]
        totals[1] += response["usage"]["outputTokens"]
    out = costkeeper("usage", "--config", str(proxy.config_path), "--days", "1", "--by", "org,app,model",
                     "--format", "json").stdout
    rows = [r for r in json.loads(out)["rows"] if r["org"] == "report-org"]
    assert len(rows) == 1 and rows[0]["requests"] == 3
    assert [rows[0]["input_tokens"], rows[0]["output_tokens"]] == totals
    table = costkeeper("usage", "--config", str(proxy.config_path), "--days", "1").stdout
    assert "report-org" in table and "TOTAL" in table


def test_client_hang_up_cancels_the_upstream(proxy: Proxy, caller_key: dict[str, str],
                                             simulator: Process, monkeypatch: pytest.MonkeyPatch) -> None:
    """The upstream is held after its first events; the client reads them and hangs up.
    The proxy must notice, read the upstream no longer than its bounded tail
    (`limits.hangup_tail_seconds`), close it and meter an estimate flagged as a
    hang-up — before the upstream is ever released (tests/e2e/test_hang_up.py)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", proxy.url)
    client = bedrock_client(caller_key)
    hold = uuid.uuid4().hex
    response = client.converse_stream(modelId=NOVA, messages=[{"role": "user", "content": [{"text": f"[[sim:hold={hold}]] x"}]}])
    events = iter(response["stream"])
    assert "messageStart" in next(events)
    request_id = response["ResponseMetadata"]["RequestId"]
    response["stream"]._raw_stream.close()  # the socket goes away, as when a process dies
    client.close()
    try:
        event = wait_for_event(proxy, request_id, timeout=10)
        assert event.estimated and event.hung_up and event.input_tokens > 0
    finally:
        httpx.post(f"{simulator.url}/_sim/release/{hold}", timeout=5)


def test_proxy_without_upstream_credentials_refuses_to_start(tmp_path: Path, simulator: Process) -> None:
    with pytest.raises(RuntimeError, match="no AWS credentials"):
        start_proxy(tmp_path, simulator.url, upstream_credentials=("", ""))


def test_unreachable_upstream_is_a_retryable_service_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    proxy = start_proxy(tmp_path, dead)
    try:
        key = proxy.issue_key("acme", "x")
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", proxy.url)
        client: Any = bedrock_client(key)
        with pytest.raises(client.exceptions.ServiceUnavailableException):
            client.converse(modelId=NOVA, messages=MESSAGES)
    finally:
        proxy.stop()
