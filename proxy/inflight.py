"""How many request-body bytes this process holds at once (`limits.max_inflight_body_bytes`).

Each request body is held whole in memory (SigV4 hashes it, policies parse it,
usage estimates read it), so without a bound a few hundred uploads of the
25 MB a body may have exhaust a process. A request reserves its declared
`Content-Length` before a byte is read, and a chunked body grows its reservation
as chunks arrive; a reservation that would pass the budget is refused with a 503
`ServiceUnavailableException`. The reservation is released when the request ends.

Why 503 and not 429 `ThrottlingException`: the limit is this process's capacity,
not the caller's rate (the per-app `rpm` limits answer 429, and dashboards and
alerts read 429 as "this app is over its rate"); both are retried by botocore
(legacy and standard modes), the AWS SDK for JavaScript and the Anthropic SDK,
and 503 is also what a load balancer in front reads as "try another target".

Only callers the head identified reach this (proxy/identity.py): an anonymous
client never reserves anything.
"""

from __future__ import annotations

from proxy.errors import ServiceUnavailableException, refusal

__all__ = ["BodyBudget", "Reservation"]

_BUSY = "The proxy is receiving too many request bodies at once; please try again shortly."


class BodyBudget:
    """The process-wide count; one event loop, so no lock."""

    __slots__ = ("held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: Bytes reserved by requests in flight.
        self.held = 0

    def reservation(self) -> Reservation:
        return Reservation(self)


class Reservation:
    """One request's share of the budget: grows, never shrinks, released once."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.size = 0

    def hold(self, size: int) -> None:
        """Hold `size` bytes in all (no-op if already held); 503 if they do not fit."""
        more = size - self.size
        if more <= 0:
            return
        budget = self._budget
        if budget.held + more > budget.limit:
            raise refusal(ServiceUnavailableException(_BUSY), "inflight_budget")
        budget.held += more
        self.size = size

    def release(self) -> None:
        self._budget.held -= self.size
        self.size = 0
