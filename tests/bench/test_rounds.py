"""bench/rounds.py: interleaved slices pooled into one point per target."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from bench.client import Point
from bench.rounds import interleaved, pooled


@given(st.integers(min_value=1, max_value=6), st.integers(min_value=1, max_value=5))
def test_every_target_gets_one_slice_per_round_and_no_target_always_follows_another(
        targets_count: int, rounds: int) -> None:
    targets = [f"t{i}" for i in range(targets_count)]
    order: list[tuple[str, int]] = []

    async def measure_slice(target: str, round_index: int) -> Point:
        order.append((target, round_index))
        point = Point(target, "op", 1, requests=round_index + 1, elapsed=1.0, cpu=0.5)
        point.latencies.append(float(len(order)))
        return point

    points = asyncio.run(interleaved(targets, measure_slice, rounds))
    assert [p.target for p in points] == targets
    # Round by round: every target once per round, rounds in order.
    assert [r for _, r in order] == sorted(r for _, r in order)
    for round_index in range(rounds):
        assert sorted(t for t, r in order if r == round_index) == sorted(targets)
    # The order rotates: each round starts with a different target (while there are targets to rotate to).
    starts = [order[r * targets_count][0] for r in range(rounds)]
    assert starts == [targets[r % targets_count] for r in range(rounds)]
    for point in points:
        assert point.requests == sum(range(1, rounds + 1))
        assert point.elapsed == rounds
        assert point.cpu == 0.5 * rounds
        assert len(point.latencies) == rounds


def test_pooled_adds_counts_and_keeps_every_sample() -> None:
    a = Point("floor", "converse", 16, requests=10, errors=1, elapsed=2.0, latencies=[0.1, 0.2], ttfb=[0.05], cpu=0.3)
    b = Point("floor", "converse", 16, requests=30, errors=0, elapsed=1.0, latencies=[0.4], ttfb=[0.01, 0.02],
              cpu=0.1)
    point = pooled([a, b])
    assert (point.target, point.op, point.concurrency) == ("floor", "converse", 16)
    assert (point.requests, point.errors, point.elapsed) == (40, 1, 3.0)
    assert point.latencies == [0.1, 0.2, 0.4] and point.ttfb == [0.05, 0.01, 0.02]
    assert abs(point.cpu - 0.4) < 1e-12
    assert abs(point.cpu_us - 0.4 * 1e6 / 40) < 1e-6
    assert point.rps == 40 / 3.0
