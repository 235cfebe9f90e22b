"""What can go wrong on the way to Bedrock, for both upstream clients (HTTP/1.1 in
proxy/upstream.py, `h2` for the bidirectional stream in proxy/h2_upstream.py),
and what the client is told when a request could not be sent."""

from __future__ import annotations

import logging

from proxy.errors import BedrockError, InternalServerException, ServiceUnavailableException

__all__ = ["UpstreamBroken", "UpstreamUnavailable", "unsent"]

logger = logging.getLogger(__name__)


class UpstreamUnavailable(Exception):
    """No response head from Bedrock: refused, reset, or timed out before it answered."""

    def __init__(self, timed_out: bool) -> None:
        super().__init__("timed out" if timed_out else "unreachable")
        self.timed_out = timed_out


class UpstreamBroken(Exception):
    """The response body ended early: cut, reset, or a read timeout between two bytes."""


def unsent(exc: BaseException) -> tuple[int, BaseException]:
    """A request that never reached Bedrock (unreachable, a credential refresh failed, a bug,
    a cancellation): the status to meter it with (so what admission held for it goes back,
    issue #18) and the exception to raise — `exc` itself when it is already the answer."""
    if isinstance(exc, UpstreamUnavailable):
        reason = "Timed out waiting for" if exc.timed_out else "Could not reach"
        return 503, ServiceUnavailableException(f"{reason} the upstream Bedrock endpoint.")
    if isinstance(exc, BedrockError):
        return exc.status, exc
    if not isinstance(exc, Exception):
        return 500, exc
    logger.error("request to the upstream failed before it was sent", exc_info=exc)
    return 500, InternalServerException("The request could not be sent upstream.")
