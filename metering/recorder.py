"""Take usage events off the request path and write them to the store in batches.

`record()` only appends to an in-memory queue, so a request never waits on the
store, and it is safe in `finally:` blocks of a cancelled task (it never
awaits). A background task writes the queue every `flush_interval`, or as soon
as `batch_size` events wait. A failed write keeps its events at the head of the
queue and is retried with exponential backoff and jitter; stores are
idempotent on request id, so a retry after a write that did land (but reported
an error) counts nothing twice. The queue is never trimmed: a growing `backlog`
is the signal (DESIGN.md §4), not a drop. Until the on-disk journal lands, events
still queued when the process dies are lost; `stop()` drains the queue first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import threading
from collections import deque

from metering.events import UsageEvent
from metering.store import UsageStore

__all__ = ["UsageRecorder"]

logger = logging.getLogger(__name__)


class UsageRecorder:
    def __init__(
        self,
        store: UsageStore,
        flush_interval: float = 1.0,
        batch_size: int = 500,
        *,
        max_backoff: float = 30.0,
    ) -> None:
        if flush_interval <= 0 or batch_size <= 0:
            raise ValueError("flush_interval and batch_size must be positive")
        self._store = store
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._max_backoff = max_backoff
        # deque: O(1) append at the tail by `record`, pops at the head by the
        # writer, and appends are atomic even from another thread.
        self._pending: deque[UsageEvent] = deque()
        # One writer at a time, or two could pop each other's batches.
        self._write_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        """Events recorded but not yet written."""
        return len(self._pending)

    def record(self, event: UsageEvent) -> None:
        """Queue `event`. O(1); never blocks, never awaits, never raises on load."""
        self._pending.append(event)
        if len(self._pending) >= self._batch_size and not self._wake.is_set():
            self._wake_writer()

    def _wake_writer(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # not started: the first flush will pick the events up
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:  # asyncio.Event is not thread-safe; the loop may close meanwhile
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    async def start(self) -> None:
        """Start the background writer on the running loop."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("UsageRecorder already started")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="costkeeper-usage-recorder")

    async def flush(self) -> None:
        """Write every event queued before this call. Raises if the store fails
        (the unwritten events stay queued)."""
        async with self._write_lock:
            await self._write(len(self._pending))

    async def stop(self, retry_for: float = 10.0) -> None:
        """Stop the writer and drain the queue, retrying failed writes for up
        to `retry_for` seconds; then the last error is raised and `backlog` says
        what was left unwritten."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        deadline = asyncio.get_running_loop().time() + retry_for
        for attempt in itertools.count():
            try:
                async with self._write_lock:
                    await self._write(len(self._pending))
                return
            except Exception:
                delay = self._backoff(attempt)
                if asyncio.get_running_loop().time() + delay > deadline:
                    logger.error("usage store unavailable at shutdown; %d events unwritten", self.backlog)
                    raise
                await asyncio.sleep(delay)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            if failures:
                await self._wait(self._stopping, self._backoff(failures - 1))
            else:
                await self._wait(self._wake, self._flush_interval)
            self._wake.clear()
            if self._stopping.is_set():
                return  # stop() drains, with its own deadline
            try:
                async with self._write_lock:
                    await self._write(len(self._pending))
            except Exception:
                failures += 1
                # The first failure with its traceback; then one line per retry.
                logger.warning(
                    "usage store write failed (attempt %d, %d events queued); retrying",
                    failures, self.backlog, exc_info=failures == 1,
                )
            else:
                if failures:
                    logger.info("usage store recovered after %d failed writes", failures)
                failures = 0

    async def _write(self, count: int) -> None:
        """Write the first `count` queued events, `batch_size` at a time."""
        while count > 0 and self._pending:
            batch = list(itertools.islice(self._pending, min(count, self._batch_size)))
            await asyncio.to_thread(self._store.write_events, batch)
            for _ in batch:  # only the writer pops, so the head is still `batch`
                self._pending.popleft()
            count -= len(batch)

    def _backoff(self, attempt: int) -> float:
        """Exponential from `flush_interval`, capped, with jitter so that replicas
        hitting the same outage do not retry in lockstep."""
        delay = min(self._max_backoff, self._flush_interval * 2**attempt)
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> None:
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            pass
