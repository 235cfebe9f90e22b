"""Fixtures: one shared simulator for the package, fresh ones for fault settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.simulator.harness import SimServer


@pytest.fixture(scope="package")
def sim() -> Iterator[SimServer]:
    server = SimServer.start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def bedrock(sim: SimServer) -> Any:
    return sim.client()


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimServer]]:
    """Start a simulator with its own settings (latency, fault rates, …)."""
    started: list[SimServer] = []

    def start(**overrides: Any) -> SimServer:
        server = SimServer.start(**overrides)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def prompt(request: pytest.FixtureRequest) -> str:
    """A prompt unique to the test, so the shared prompt cache never leaks between tests."""
    return f"Tell me something about {request.node.nodeid}."
