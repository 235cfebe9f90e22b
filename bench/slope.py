"""CPU per streamed frame as a slope: burst streams of two frame counts, measured in turns.

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
from bench.rounds import pooled

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
                         run_point: Callable[[T, str], Awaitable[Point]], rounds: int = 1) -> list[Slope]:
    """For each operation and each (target in front of the small-count upstream, the same kind
    of target in front of the large-count one): the two points in `rounds` slices each
    (`run_point` sizes a slice as its share of the point), every round measuring each pair's
    two back to back, the small one first in even rounds and last in odd ones, the pairs'
    order rotating. A slope subtracts two numbers: the machine's drift over the minute a row
    takes then lands on both alike (bench/rounds.py: one point measured at 2 ms per frame
    and the next at 0.2 could make any ratio)."""
    rounds = max(1, rounds)
    slopes = []
    for op in ops:
        parts: list[tuple[list[Point], list[Point]]] = [([], []) for _ in pairs]
        for round_index in range(rounds):
            for offset in range(len(pairs)):
                index = (round_index + offset) % len(pairs)
                small_target, large_target = pairs[index]
                small, large = parts[index]
                if round_index % 2 == 0:
                    small.append(await run_point(small_target, op))
                    large.append(await run_point(large_target, op))
                else:
                    large.append(await run_point(large_target, op))
                    small.append(await run_point(small_target, op))
        for small_parts, large_parts in parts:
            slope = Slope(small_parts[0].target, op, frames[0], frames[1], pooled(small_parts), pooled(large_parts))
            slopes.append(slope)
            print(f"slope   {op:15} {slope.target:13} cpu/stream {slope.small.cpu_us:8,.1f} → "
                  f"{slope.large.cpu_us:8,.1f} us  {slope.per_frame_us:.3f} us/frame  fixed {slope.fixed_us:,.1f} us",
                  flush=True)
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
           f"row measured in turns, a slice of each per round (their order alternating), the slices pooled. "
           f"µs per frame = (CPU/stream at {large:,} − at {small:,}) ÷ {large - small:,}; "
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
