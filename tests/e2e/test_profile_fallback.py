"""A client that names an inference profile keeps its scope through the proxy's fallback.

The simulator refuses a bare id of a profile-only model like Bedrock does
(simulator/profiles.py), so a proxy that rewrote `us.` X to a bare Y would show
here as Bedrock's 400 rather than pass unnoticed (BEDROCK_WIRE.md §1.2:
"`us.` X falls back to `us.` Y, never to a bare Y").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_PRICING
from tests.e2e.clients import bedrock_client
from tests.processes import Process, Proxy, start_proxy

SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU = "anthropic.claude-haiku-4-5-20251001-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "Name a river."}]}]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, simulator: Process) -> Iterator[Proxy]:
    """The chain names base models (no `model_scopes` table, so nothing checks them at
    start-up); Sonnet's quota is 0 for `acme`. Found when the simulator began refusing
    bare ids (issue #16 item 5): the proxy used to send the chain member's bare id."""
    config = {
        "pricing": TEST_PRICING,
        "models": {"smart": SONNET, "fast": HAIKU},
        "fallback": ["smart", "fast"],
        "orgs": {"acme": {"daily_quota_usd": {"smart": 0}}, "open": {}},
    }
    process = start_proxy(tmp_path_factory.mktemp("profile-fallback"), simulator.url, config)
    yield process
    process.stop()


def _sent(simulator: Process, request_id: str) -> dict[str, Any]:
    records = httpx.get(f"{simulator.url}/_sim/requests", timeout=5).json()
    return next(r for r in records if r["request_id"] == request_id)


def test_a_profile_on_the_chain_reaches_bedrock_as_sent(proxy: Proxy, simulator: Process,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", proxy.url)
    client = bedrock_client(proxy.issue_key("open", "app"))
    response = client.converse(modelId=f"us.{SONNET}", messages=MESSAGES)
    assert _sent(simulator, response["ResponseMetadata"]["RequestId"])["model_id"] == f"us.{SONNET}"


def test_fallback_keeps_the_clients_profile_scope(proxy: Proxy, simulator: Process,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", proxy.url)
    client = bedrock_client(proxy.issue_key("acme", "app"))
    response = client.converse(modelId=f"us.{SONNET}", messages=MESSAGES)
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-costkeeper-fallback"] == "true"
    assert _sent(simulator, response["ResponseMetadata"]["RequestId"])["model_id"] == f"us.{HAIKU}"
