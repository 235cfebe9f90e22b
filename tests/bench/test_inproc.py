"""Smoke test of `bench/inproc.py`: every operation runs through the handler and gives a
figure. No timing here: the figure is only checked to be a number."""

from __future__ import annotations

import asyncio
import hashlib
import math
from hashlib import sha256
from typing import Any

import botocore.auth
import pytest

from bench.inproc import AUTH_MODES, OPERATIONS, cpu_per_request, padded_body


@pytest.mark.parametrize("auth", AUTH_MODES)
@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_every_operation_runs_in_process(op: str, auth: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """In sigv4 mode too: every request's signature verified (cpu_per_request raises unless all are 200)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDBENCHUPSTREAM001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "bench-secret")
    cpu = asyncio.run(cpu_per_request(op, requests=8, concurrency=4, warm=4, auth=auth))
    assert math.isfinite(cpu) and cpu >= 0


@pytest.mark.parametrize("auth", AUTH_MODES)
def test_a_requests_body_is_hashed_once_through_the_handler(auth: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verifying a SigV4 request and re-signing it for Bedrock hash its body once between
    them (issue #20: a coding agent's 100 KB body costs ~60 µs a hash), as trust mode's
    re-signing does: every SHA-256 of the body is counted, botocore's and the proxy's."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDBENCHUPSTREAM001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "bench-secret")
    body = padded_body(OPERATIONS["converse"][1], 5000)
    hashed: list[int] = []

    def counting(data: bytes = b"") -> Any:
        if bytes(data) == body:
            hashed.append(1)
        return sha256(data)

    monkeypatch.setattr(botocore.auth, "sha256", counting)
    monkeypatch.setattr(hashlib, "sha256", counting)
    asyncio.run(cpu_per_request("converse", requests=8, concurrency=4, warm=4, auth=auth, body_bytes=5000))
    signed_by_the_client = 1 if auth == "sigv4" else 0  # once, by botocore, for every request (bench/inproc.py)
    assert len(hashed) == signed_by_the_client + 4 + 8
