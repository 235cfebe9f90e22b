"""One named background task of a long-lived loop (a poller, a consolidator).

Why a class of its own: each loop of the proxy that polls something (stored quota
overrides, the config file, the daily-totals consolidation) starts one task and, at
shutdown, cancels it and waits for it to be gone; written once here, the cancel and
the wait cannot drift apart between them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

__all__ = ["BackgroundTask"]


class BackgroundTask:
    def __init__(self, name: str) -> None:
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self, loop: Coroutine[Any, Any, None]) -> None:
        self._task = asyncio.create_task(loop, name=self._name)

    async def stop(self) -> None:
        """Cancel the task and wait until it has ended (no-op when not started)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
