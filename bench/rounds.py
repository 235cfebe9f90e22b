"""Load points measured in interleaved rounds, so that targets compared side by side
share the machine's moods.

This VM's speed drifts by 10–20 % over a minute (other tenants, frequency, the
proxies' own one-second metering flushes), which is more than several of issue #20's
targets allow between the floor and a proxy. A point measured in one block, the floor's
first and each proxy's after it, puts that drift between them. Here each target's point
is `rounds` slices of its duration, the targets taking turns in every round (the order
rotating from round to round, so that no target always follows the same one), and a
target's slices are pooled into its point: latencies together, requests, time and CPU
summed. A slow minute then lands on every target alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from bench.client import Point

__all__ = ["interleaved", "pooled"]

T = TypeVar("T")


def pooled(slices: Sequence[Point]) -> Point:
    """One point from slices of the same target, operation and concurrency."""
    first = slices[0]
    point = Point(first.target, first.op, first.concurrency)
    for part in slices:
        point.requests += part.requests
        point.errors += part.errors
        point.elapsed += part.elapsed
        point.latencies.extend(part.latencies)
        point.ttfb.extend(part.ttfb)
        point.late.extend(part.late)
        point.cpu += part.cpu
    return point


async def interleaved(targets: Sequence[T], measure_slice: Callable[[T, int], Awaitable[Point]],
                      rounds: int) -> list[Point]:
    """Each target's point, measured as `rounds` slices in turn (`measure_slice(target,
    round)`; it sizes a slice as its share of the point), in `targets`' order."""
    rounds = max(1, rounds)
    slices: list[list[Point]] = [[] for _ in targets]
    for round_index in range(rounds):
        for offset in range(len(targets)):
            index = (round_index + offset) % len(targets)
            slices[index].append(await measure_slice(targets[index], round_index))
    return [pooled(parts) for parts in slices]
