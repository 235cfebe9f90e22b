from __future__ import annotations

from proxy.policies import RateLimit
from proxy.ratelimit import RateLimiter


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rpm_window_slides() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limit = RateLimit(rpm=3)
    assert [limiter.admit("acme/bot", "m", limit, 1) for _ in range(3)] == [None] * 3
    assert "3 requests per minute" in (limiter.admit("acme/bot", "m", limit, 1) or "")
    assert limiter.admit("acme/other", "m", limit, 1) is None  # per app
    clock.now += 61
    assert limiter.admit("acme/bot", "m", limit, 1) is None


def test_tpm_counts_estimates_corrected_by_real_usage() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limit = RateLimit(tpm=1000)
    assert limiter.admit("k", "m", limit, 900) is None
    assert limiter.admit("k", "m", limit, 200) is not None  # 900 + 200 > 1000
    limiter.correct("k", "m", 900, 100)  # the request really used 100
    assert limiter.admit("k", "m", limit, 200) is None
