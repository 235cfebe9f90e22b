"""Per-app, per-model requests- and tokens-per-minute limits, counted in this process.

A sliding window of one-second buckets over the last 60 s. Requests count when
admitted; tokens count the estimate when admitted and are corrected to the real
usage when it is known. A correction downwards comes off the admission's own
bucket (and lapses with it), one upwards is new usage counted from now: a
request's tokens never count less than it used for a whole window (issue #18: a
lone negative correction, left after its admission bucket aged out, let through
~17,800 estimated tokens a minute under a 5,000 TPM limit). Limits are per replica: with N replicas behind a
load balancer, configure each with its share (documented in the README).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from proxy.policies import RateLimit

__all__ = ["RateLimiter"]

_WINDOW = 60


class _Window:
    __slots__ = ("buckets",)

    def __init__(self) -> None:
        # (second, requests, tokens), oldest first
        self.buckets: deque[list[int]] = deque()

    def totals(self, now: int) -> tuple[int, int]:
        while self.buckets and self.buckets[0][0] <= now - _WINDOW:
            self.buckets.popleft()
        return sum(b[1] for b in self.buckets), sum(b[2] for b in self.buckets)

    def add(self, now: int, requests: int, tokens: int) -> None:
        if self.buckets and self.buckets[-1][0] == now:
            self.buckets[-1][1] += requests
            self.buckets[-1][2] += tokens
        else:
            self.buckets.append([now, requests, tokens])


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def second(self) -> int:
        """The current one-second bucket (pass it to `admit` and `correct`)."""
        return int(self._clock())

    def admit(self, key: str, model: str, limit: RateLimit, tokens: int, at: int | None = None) -> str | None:
        """Count the request in (in bucket `at`, default now); or return why it exceeds the
        limit (and count nothing)."""
        window = self._windows.setdefault((key, model), _Window())
        now = self.second() if at is None else at
        requests, used = window.totals(now)
        if limit.rpm is not None and requests + 1 > limit.rpm:
            return f"Too many requests: {limit.rpm} requests per minute allowed for {model}."
        if limit.tpm is not None and used + tokens > limit.tpm:
            return f"Too many tokens: {limit.tpm} tokens per minute allowed for {model}."
        window.add(now, 1, tokens)
        return None

    def correct(self, key: str, model: str, estimated: int, actual: int, admitted: int) -> None:
        """Replace the token estimate a request was admitted with (in bucket `admitted`)
        by its real usage."""
        window = self._windows.get((key, model))
        if window is None or actual == estimated:
            return
        if actual > estimated:
            window.add(self.second(), 0, actual - estimated)
            return
        for bucket in reversed(window.buckets):
            if bucket[0] == admitted:
                bucket[2] -= min(estimated - actual, bucket[2])
                return
            if bucket[0] < admitted:
                return
