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
    admitted = limiter.second()
    assert limiter.admit("k", "m", limit, 900, at=admitted) is None
    assert limiter.admit("k", "m", limit, 200) is not None  # 900 + 200 > 1000
    limiter.correct("k", "m", 900, 100, admitted)  # the request really used 100
    assert limiter.admit("k", "m", limit, 200) is None


def test_tpm_holds_over_the_whole_window_whatever_the_corrections() -> None:
    """Issue #18 item 13: a correction downwards comes off the admission's own bucket, so it
    cannot outlive it and leave a negative balance (it let ~17,800 estimated tokens through
    within a minute under a 5,000 TPM limit)."""
    clock = Clock()
    limiter = RateLimiter(clock)
    limit = RateLimit(tpm=5_000)
    admitted: list[int] = []
    ending: dict[int, list[int]] = {}
    for second in range(int(clock.now), int(clock.now) + 600):
        clock.now = second
        for at in ending.pop(second, []):  # requests of 61 s: estimated 1,000, used 100
            limiter.correct("k", "m", 1_000, 100, at)
        if limiter.admit("k", "m", limit, 1_000, at=second) is None:
            admitted.append(second)
            ending.setdefault(second + 61, []).append(second)
    assert max(sum(1 for at in admitted if start <= at < start + 60) for start in admitted) * 1_000 <= limit.tpm


def test_tokens_beyond_the_estimate_count_from_when_they_are_known() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limit = RateLimit(tpm=1_000)
    at = limiter.second()
    assert limiter.admit("k", "m", limit, 100, at=at) is None
    clock.now += 30
    limiter.correct("k", "m", 100, 900, at)  # it used 900
    assert limiter.admit("k", "m", limit, 1) is None and limiter.admit("k", "m", limit, 100) is not None
    clock.now += 31  # the admission's bucket is gone, the 800 found later still counts
    assert limiter.admit("k", "m", limit, 300) is not None
