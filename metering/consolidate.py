"""Daily totals per scope, consolidated from the counter shards by one replica.

Every replica runs a `Consolidator`; each round it tries to take (or renew) a
lease — a conditional put with an expiry — and only the holder sums the shards
of today and yesterday (late flushes after midnight) into `TOTAL` items. If the
holder dies, its lease expires after `lease_factor × interval` and another
replica takes over. A consolidation recomputes totals from the shards, so
running it twice, or on two replicas during a lease hand-over, is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Callable
from typing import Protocol

from metering.background import BackgroundTask
from metering.events import utc_day

__all__ = ["Consolidator"]

logger = logging.getLogger(__name__)

LEASE_NAME = "consolidator"


class ConsolidatingStore(Protocol):
    async def acquire_lease(self, name: str, owner: str, seconds: float) -> bool: ...
    async def consolidate(self, day: str) -> int: ...


class Consolidator:
    def __init__(
        self,
        store: ConsolidatingStore,
        interval: float = 60.0,
        *,
        owner: str | None = None,
        lease_factor: float = 2.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._interval = interval
        self.owner = owner or f"{socket.gethostname()}-{secrets.token_hex(4)}"
        self._lease_seconds = interval * lease_factor
        self._clock = clock
        self._background = BackgroundTask("costkeeper-consolidator")
        #: Rounds in which this replica held the lease and consolidated.
        self.rounds = 0

    async def run_once(self) -> bool:
        """One round: True if this replica held the lease and consolidated."""
        if not await self._store.acquire_lease(LEASE_NAME, self.owner, self._lease_seconds):
            return False
        now = self._clock()
        for day in sorted({utc_day(now - 86_400), utc_day(now)}):
            await self._store.consolidate(day)
        self.rounds += 1
        return True

    async def start(self) -> None:
        self._background.start(self._run())

    async def stop(self) -> None:
        await self._background.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the store may be down; the next round retries
                logger.warning("consolidation of daily totals failed: %s", exc)
            await asyncio.sleep(self._interval)
