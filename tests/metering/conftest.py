"""Shared fixtures: stores are real files in tmp_path, events built from one template.

Helpers are handed out as fixtures, not imported: `conftest` is not a unique
module name once other test directories have their own.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from metering.events import UsageEvent
from metering.sqlite_store import SQLiteStore

#: 2025-03-10 12:00:00 UTC (the template's timestamp).
T0 = float(calendar.timegm((2025, 3, 10, 12, 0, 0)))

_TEMPLATE = UsageEvent(
    request_id="req-0",
    timestamp=T0,
    org="acme",
    app="chatbot",
    operation="Converse",
    requested_model="premium",
    model="amazon.nova-pro-v1:0",
    input_tokens=100,
    output_tokens=50,
    cache_read_tokens=0,
    cache_write_tokens=0,
    cost_micro_usd=1_000,
    priced=True,
    latency_ms=120.5,
    first_byte_ms=None,
    status=200,
    estimated=False,
)


def _make_event(request_id: str = "req-0", **overrides: Any) -> UsageEvent:
    return replace(_TEMPLATE, request_id=request_id, **overrides)


@pytest.fixture
def make_event() -> Callable[..., UsageEvent]:
    """`make_event("req-1", org="other", ...)`: the template event with overrides."""
    return _make_event


# Parametrized by backend so a DynamoDB-backed store can join the same suite.
@pytest.fixture(params=["sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "costkeeper.db") as opened:
        yield opened
