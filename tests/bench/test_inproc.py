"""Smoke test of `bench/inproc.py`: every operation runs through the handler and gives a
figure. No timing here: the figure is only checked to be a number."""

from __future__ import annotations

import asyncio
import math

import pytest

from bench.inproc import OPERATIONS, cpu_per_request


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_every_operation_runs_in_process(op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDBENCHUPSTREAM001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "bench-secret")
    cpu = asyncio.run(cpu_per_request(op, requests=8, concurrency=4, warm=4))
    assert math.isfinite(cpu) and cpu >= 0
