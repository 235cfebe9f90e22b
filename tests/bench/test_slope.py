"""bench/slope.py's arithmetic, table and order of measurement, on made-up points (no server, no timing)."""

from __future__ import annotations

import asyncio

from bench.client import Point
from bench.slope import Slope, measure_slopes, slope_rows, slope_table


def _slope(target: str, op: str, small_us: float, large_us: float) -> Slope:
    small, large = Point(target, op, 16, requests=1_000), Point(target, op, 16, requests=1_000)
    small.cpu, large.cpu = small_us * 1e-3, large_us * 1e-3  # CPU seconds over 1,000 streams
    return Slope(target, op, 200, 1_000, small, large)


def test_per_frame_is_the_slope_and_fixed_the_intercept() -> None:
    slope = _slope("proxy-trust", "invoke-stream", 300.0, 1_100.0)
    assert abs(slope.per_frame_us - 1.0) < 1e-9
    assert abs(slope.fixed_us - 100.0) < 1e-9


def test_table_has_a_row_per_slope_and_ratios_to_the_floor_of_the_same_operation() -> None:
    slopes = [_slope("floor", "converse-stream", 100.0, 180.0),  # 0.1 µs per frame
              _slope("proxy-trust", "converse-stream", 300.0, 540.0),  # 0.3: 3.0×
              _slope("floor", "invoke-stream", 100.0, 100.0),  # a flat floor: no ratio to it
              _slope("proxy-trust", "invoke-stream", 300.0, 1_100.0)]
    lines = slope_table(slopes, 16)
    assert "## CPU per frame, the slope between 200- and 1,000-frame bursts (c=16)" in lines
    rows = [line for line in lines if line.startswith("| floor") or line.startswith("| proxy")]
    assert rows == ["| floor | converse-stream | 100 | 180 | 0.100 | 80 |  |",
                    "| proxy-trust | converse-stream | 300 | 540 | 0.300 | 240 | 3.0× |",
                    "| floor | invoke-stream | 100 | 100 | 0.000 | 100 |  |",
                    "| proxy-trust | invoke-stream | 300 | 1,100 | 1.000 | 100 | n/a |"]
    assert [row["ratio"] for row in slope_rows(slopes)] == ["", "3.0×", "", "n/a"]


def test_no_slopes_no_section() -> None:
    assert slope_table([], 16) == []


def test_the_two_points_of_a_slope_are_measured_in_turns_and_pooled() -> None:
    """Each round measures every pair's two points back to back, the small one first in
    even rounds and last in odd ones, the pairs' order rotating; a row pools its slices."""
    calls: list[tuple[str, str]] = []

    async def run_point(target: str, op: str) -> Point:
        calls.append((target, op))
        point = Point(target.removesuffix("-twin"), op, 16, requests=10)
        point.cpu = (0.002 if target.endswith("-twin") else 0.001) * (1 + len(calls) / 100)  # drifting
        return point

    pairs = [("floor", "floor-twin"), ("proxy-trust", "proxy-trust-twin")]
    slopes = asyncio.run(measure_slopes(pairs, ["converse-stream"], (200, 1_000), run_point, rounds=3))
    assert calls == [(t, "converse-stream") for t in (
        "floor", "floor-twin", "proxy-trust", "proxy-trust-twin",  # round 0: small first
        "proxy-trust-twin", "proxy-trust", "floor-twin", "floor",  # round 1: rotated, large first
        "floor", "floor-twin", "proxy-trust", "proxy-trust-twin")]  # round 2
    assert [(s.target, s.small.requests, s.large.requests) for s in slopes] == [
        ("floor", 30, 30), ("proxy-trust", 30, 30)]
    floor = slopes[0]
    assert abs(floor.small.cpu - 0.001 * (3 + (1 + 8 + 9) / 100)) < 1e-12
    assert abs(floor.large.cpu - 0.002 * (3 + (2 + 7 + 10) / 100)) < 1e-12
