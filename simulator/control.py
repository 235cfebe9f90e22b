"""Test controls: per-request directives, hold gates and random faults.

Directives ride in the prompt text, so a test makes one specific request fail
or pause without reconfiguring the simulator, through any proxy in between:

    [[sim:throttle]]      429 ThrottlingException before the response head
    [[sim:validation]]    400 ValidationException
    [[sim:cut]]           drop the connection mid-response: streams after a few events
                          (half a frame), other operations after half the body
    [[sim:stream-error]]  streams: in-stream modelStreamErrorException after a few events
    [[sim:hold=KEY]]      wait for `POST /_sim/release/KEY` (streams: after a few events;
                          other operations: before the response head)
    [[sim:hold-last=KEY]] streams: wait for the release before the last event, the one
                          with the usage (a client may leave after `messageStop`)
    [[sim:words=N]]       exactly N output words (still capped by the max tokens)
    [[sim:served-tier=T]] answer that service tier T served the request (Bedrock says what served)
    [[sim:served-latency=L]]  answer that latency mode L served it (`standard` once the
                          latency-optimized quota is used up)
"""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass

__all__ = ["Directives", "NO_DIRECTIVES", "parse_directives", "HoldGates", "Faults", "HOLD_TIMEOUT"]

#: A held request goes on by itself after this long, so a forgotten release
#: cannot wedge a test run.
HOLD_TIMEOUT = 30.0
_MARKER = b"[[sim:"
_DIRECTIVE = re.compile(rb"\[\[sim:([a-z-]+)(?:=([A-Za-z0-9_.:-]{1,128}))?\]\]")


@dataclass(frozen=True, slots=True)
class Directives:
    throttle: bool = False
    validation: bool = False
    cut: bool = False
    stream_error: bool = False
    hold: str | None = None
    hold_last: str | None = None
    words: int | None = None
    served_tier: str | None = None
    served_latency: str | None = None


NO_DIRECTIVES = Directives()


def parse_directives(body: bytes) -> Directives:
    """Directives anywhere in the raw body (cheap substring test first: the hot
    path of a benchmark never runs the regex)."""
    if _MARKER not in body:
        return NO_DIRECTIVES
    found: dict[str, object] = {}
    for match in _DIRECTIVE.finditer(body):
        name, value = match[1].decode(), match[2]
        if name in ("throttle", "validation", "cut"):
            found[name] = True
        elif name == "stream-error":
            found["stream_error"] = True
        elif name in ("hold", "hold-last") and value:
            found[name.replace("-", "_")] = value.decode()
        elif name == "words" and value and value.isdigit():
            found["words"] = int(value)
        elif name in ("served-tier", "served-latency") and value:
            found[name.replace("-", "_")] = value.decode()
    return Directives(**found) if found else NO_DIRECTIVES  # type: ignore[arg-type]


class HoldGates:
    """One `asyncio.Event` per key. A release before the request arrives is
    remembered, so a test need not race the request to the hold point."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._waiting: dict[str, int] = {}

    async def wait(self, key: str, limit: float = HOLD_TIMEOUT) -> bool:
        """True if released, False when `limit` seconds passed first."""
        event = self._events.setdefault(key, asyncio.Event())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            await asyncio.wait_for(event.wait(), limit)
            return True
        except TimeoutError:
            return False
        finally:
            left = self._waiting[key] - 1
            if left:
                self._waiting[key] = left
            else:
                del self._waiting[key]
            if event.is_set() and self._events.get(key) is event:
                del self._events[key]  # consumed: the key can hold the next request

    def release(self, key: str) -> int:
        """Open the gate; returns how many requests were waiting on it."""
        self._events.setdefault(key, asyncio.Event()).set()
        return self._waiting.get(key, 0)

    def waiting(self) -> dict[str, int]:
        return dict(self._waiting)

    def clear(self) -> None:
        for event in self._events.values():
            event.set()
        self._events.clear()


class Faults:
    """Random throttling and server errors at configured rates, reproducible by seed."""

    def __init__(self, throttle_rate: float, error_rate: float, seed: int) -> None:
        self._throttle = throttle_rate
        self._error = throttle_rate + error_rate
        self._rng = random.Random(seed)

    def draw(self) -> str | None:
        """"throttle", "error" or None for one request."""
        if self._error <= 0:
            return None
        roll = self._rng.random()
        if roll < self._throttle:
            return "throttle"
        if roll < self._error:
            return "error"
        return None
