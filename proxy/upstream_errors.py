"""What can go wrong on the way to Bedrock, for both upstream clients (aiohttp for
HTTP/1.1 in proxy/upstream.py, `h2` for the bidirectional stream in proxy/h2_upstream.py)."""

from __future__ import annotations

__all__ = ["UpstreamBroken", "UpstreamUnavailable"]


class UpstreamUnavailable(Exception):
    """No response head from Bedrock: refused, reset, or timed out before it answered."""

    def __init__(self, timed_out: bool) -> None:
        super().__init__("timed out" if timed_out else "unreachable")
        self.timed_out = timed_out


class UpstreamBroken(Exception):
    """The response body ended early: cut, reset, or a read timeout between two bytes."""
