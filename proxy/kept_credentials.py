"""The proxy's own AWS credentials for re-signing, their frozen set kept for a second.

aiobotocore's refreshable credentials (web identity / IRSA, container and instance
roles, SSO, assumed roles: what a deployment on AWS signs with) check their expiry on
every `get_frozen_credentials()`: botocore's `refresh_needed` reads the clock through
dateutil's `tzlocal()` and subtracts datetimes of two time zones. Measured here
(2026-12-06, issue #20): 45 µs warm and about 105 µs on a cold CPU per request, more
than the SigV4 signature they are for; static credentials cost 0.8 µs. botocore
refreshes 15 minutes before expiry (advisory) and must by 10 (mandatory), so asking
once a second instead of once per request changes nothing of when it refreshes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["KeptFrozenCredentials"]


class KeptFrozenCredentials:
    """aiobotocore credentials whose `get_frozen_credentials()` is asked at most once per
    `keep_for` seconds; in between, the same frozen set is handed out. A failure is not
    kept: the next call asks again."""

    __slots__ = ("_clock", "_credentials", "_frozen", "_keep_for", "_until")

    def __init__(self, credentials: Any, *, keep_for: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._credentials = credentials
        self._keep_for = keep_for
        self._clock = clock
        self._frozen: Any = None
        self._until = float("-inf")

    @classmethod
    def around(cls, credentials: Any) -> KeptFrozenCredentials | None:
        """`credentials` kept so, or None when the chain found none."""
        return None if credentials is None else cls(credentials)

    @property
    def method(self) -> str:
        """Where the chain found them (`env`, `assume-role-with-web-identity`, …), for the log."""
        return str(getattr(self._credentials, "method", "unknown"))

    async def get_frozen_credentials(self) -> Any:
        now = self._clock()
        if now >= self._until:
            self._frozen = await self._credentials.get_frozen_credentials()
            self._until = now + self._keep_for
        return self._frozen
