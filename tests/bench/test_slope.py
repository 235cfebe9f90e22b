"""bench/slope.py's arithmetic and table, on made-up points (no server, no timing)."""

from __future__ import annotations

from bench.client import Point
from bench.slope import Slope, slope_rows, slope_table


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
