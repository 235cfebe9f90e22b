"""Smoke test of `bench/inproc.py`: every operation runs through the handler and gives a
figure. No timing here: the figure is only checked to be a number."""

from __future__ import annotations

import asyncio
import math

import pytest

from bench.inproc import AUTH_MODES, OPERATIONS, cpu_per_request


@pytest.mark.parametrize("auth", AUTH_MODES)
@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_every_operation_runs_in_process(op: str, auth: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """In sigv4 mode too: every request's signature verified (cpu_per_request raises unless all are 200)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDBENCHUPSTREAM001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "bench-secret")
    cpu = asyncio.run(cpu_per_request(op, requests=8, concurrency=4, warm=4, auth=auth))
    assert math.isfinite(cpu) and cpu >= 0
