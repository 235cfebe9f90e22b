"""Shared fixtures: one simulator and one proxy process for the session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.processes import Process, Proxy, start_proxy, start_simulator

# CI (`CI=true`) replays a fixed set of examples, so a red run always means a change
# broke something; developers' runs keep exploring new inputs (and keep any failing
# example in .hypothesis/ until it is fixed).
settings.register_profile("ci", derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

#: Pricing for the models the end-to-end tests use (USD per 1M tokens).
TEST_PRICING = {
    "amazon.nova-micro-v1:0": {"input": 0.035, "output": 0.14, "cache_read": 0.00875},
    "amazon.nova-lite-v1:0": {"input": 0.06, "output": 0.24, "cache_read": 0.015},
    "anthropic.claude-haiku-4-5-20251001-v1:0": {"input": 1.0, "output": 5.0, "cache_read": 0.1, "cache_write": 1.25},
    "anthropic.claude-sonnet-4-5-20250929-v1:0": {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75},
}
MAX_BODY_BYTES = 64 * 1024


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def simulator(session_dir: Path) -> Iterator[Process]:
    process = start_simulator(session_dir)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def proxy(session_dir: Path, simulator: Process) -> Iterator[Proxy]:
    process = start_proxy(
        session_dir,
        simulator.url,
        {
            "pricing": TEST_PRICING,
            "limits": {"max_body_bytes": MAX_BODY_BYTES},
            # No key caching, so a revocation shows on the next request.
            "auth": {"mode": "sigv4", "key_cache_ttl": 0},
        },
    )
    yield process
    process.stop()


@pytest.fixture(scope="session")
def caller_key(proxy: Proxy) -> dict[str, str]:
    return proxy.issue_key("acme", "chatbot")
