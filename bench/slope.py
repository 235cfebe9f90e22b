"""CPU per streamed frame as a slope: burst streams of two frame counts, one after the other.

The burst table's "per frame" figure, (CPU per stream − CPU per Converse request) ÷ frames,
counts each stream's fixed costs (the watcher's set-up, the usage chunks decoded once per
stream, the streamed response path) as frames' cost, and for the floor it is the difference
of two near-equal numbers, so its ratio to the floor's is noise (issue #20). Two frame counts
through the same kind of process separate the two: per frame = (CPU/stream at the large
count − at the small) ÷ (large − small), and the fixed cost per stream is the intercept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bench.client import Point

__all__ = ["Slope", "measure_slopes", "slope_rows", "slope_table"]

T = TypeVar("T")


@dataclass
class Slope:
    """One target and operation: the two points and what the line through them says."""

    target: str
    op: str
    small_frames: int
    large_frames: int
    small: Point
    large: Point

    @property
    def per_frame_us(self) -> float:
        return (self.large.cpu_us - self.small.cpu_us) / (self.large_frames - self.small_frames)

    @property
    def fixed_us(self) -> float:
        """The intercept: CPU per stream at zero frames (request, watcher set-up, usage, response)."""
        return self.small.cpu_us - self.small_frames * self.per_frame_us


async def measure_slopes(pairs: Sequence[tuple[T, T]], ops: Sequence[str], frames: tuple[int, int],
                         run_point: Callable[[T, str], Awaitable[Point]]) -> list[Slope]:
    """For each operation and each (target in front of the small-count upstream, the same kind
    of target in front of the large-count one): the two points back to back, so the machine's
    load drifts as little as can be between the two numbers a slope subtracts."""
    slopes = []
    for op in ops:
        for small_target, large_target in pairs:
            small = await run_point(small_target, op)
            large = await run_point(large_target, op)
            slopes.append(Slope(small.target, op, frames[0], frames[1], small, large))
            print(f"slope   {op:15} {small.target:13} cpu/stream {small.cpu_us:8,.1f} → {large.cpu_us:8,.1f} us  "
                  f"{slopes[-1].per_frame_us:.3f} us/frame  fixed {slopes[-1].fixed_us:,.1f} us", flush=True)
    return slopes


def _ratio(slope: Slope, floor: Slope | None) -> str:
    if floor is None or slope is floor:
        return ""
    ratio = slope.per_frame_us / floor.per_frame_us if floor.per_frame_us > 0 else float("nan")
    return f"{ratio:.1f}×" if ratio == ratio else "n/a"


def _num(x: float, digits: int) -> str:
    return f"{x:,.{digits}f}" if x == x else "n/a"


def slope_rows(slopes: list[Slope]) -> list[dict[str, Any]]:
    """The raw numbers (for `--json`)."""
    floors = {s.op: s for s in slopes if s.target == "floor"}
    return [{"target": s.target, "op": s.op, "frames": [s.small_frames, s.large_frames],
             "cpu_small_us": s.small.cpu_us, "cpu_large_us": s.large.cpu_us, "per_frame_us": s.per_frame_us,
             "fixed_us": s.fixed_us, "ratio": _ratio(s, floors.get(s.op)),
             "streams": [s.small.requests, s.large.requests], "errors": s.small.errors + s.large.errors}
            for s in slopes]


def slope_table(slopes: list[Slope], concurrency: int) -> list[str]:
    """The RESULTS.md section: one row per target and operation."""
    if not slopes:
        return []
    small, large = slopes[0].small_frames, slopes[0].large_frames
    floors = {s.op: s for s in slopes if s.target == "floor"}
    out = ["", f"## CPU per frame, the slope between {small:,}- and {large:,}-frame bursts (c={concurrency})", "",
           f"Burst streams of {small:,} and of {large:,} frames (one upstream write each), the two points of a "
           f"row back to back. µs per frame = (CPU/stream at {large:,} − at {small:,}) ÷ {large - small:,}; "
           f"fixed µs per stream = CPU/stream at {small:,} − {small:,} × that (the request, the watcher's "
           "set-up, the usage read once per stream, the streamed response). Unlike the burst table's "
           "(CPU/stream − CPU/request) ÷ frames, no per-stream cost is counted as frames' cost. Ratio = "
           "µs per frame ÷ the floor's, same operation.", "",
           f"| target | operation | CPU/stream at {small:,} µs | CPU/stream at {large:,} µs | µs per frame "
           "| fixed µs per stream | ratio to the floor's |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for s in slopes:
        out.append(f"| {s.target} | {s.op} | {_num(s.small.cpu_us, 0)} | {_num(s.large.cpu_us, 0)} "
                   f"| {_num(s.per_frame_us, 3)} | {_num(s.fixed_us, 0)} | {_ratio(s, floors.get(s.op))} |")
    return out
