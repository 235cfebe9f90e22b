"""The metering pipeline: journal, aggregate, flush — nothing lost, nothing doubled.

    record(event) ──► journal (append, one write(2)) ──► tally in memory
                          │ sealed every flush_interval
                          ▼
                      batch = a range of sealed segments, written down first
                          │ store.write_batch(batch_id, events): one transaction
                          ▼   with the batch marker (DESIGN.md §4)
                      segments deleted

`record()` is synchronous, O(1), never awaits and never raises: the proxy calls
it on its hot path and in `finally:` blocks of cancelled tasks. The event is in
the journal (the kernel's page cache) before `record` returns, so a killed
process loses nothing; `fsync` runs in batches off the loop (`fsync_interval`).

A background task seals the active segment at most every `flush_interval` and
writes the sealed backlog to the store, oldest first, up to `batch_size` events
per batch. A failed write is retried with exponential backoff and jitter; while
the store is down the journal grows, `backlog` counts it, `healthy` is False,
and the proxy keeps serving. A batch's id is the journal range it covers, so
after a crash (or a write that landed but was not acknowledged) the replay
carries the same id and the store applies it at most once.

A stream still open (InvokeModelWithBidirectionalStream, up to 8 minutes) is
`checkpoint`ed as it goes: its usage so far, in a file its final event supersedes
and a crash leaves for the next start to record, once (metering/checkpoints.py).

`on_stored` hears what each stored batch settled of each budget lease (Σ reserved
per lease, `Tally.settled`): a lease is kept alive until its settlements are in
the store (metering/leases.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

from metering.aggregate import SettleKey, Tally
from metering.checkpoints import StreamCheckpoints
from metering.events import UsageEvent
from metering.journal import Journal, JournalError, encode
from metering.store import UsageStore
from metering.store_stats import StoreStats

__all__ = ["UsageRecorder"]

logger = logging.getLogger(__name__)


#: At most this many recorded events are kept in memory for the flush (≈ 10 MB).
_KEPT_EVENTS = 20_000


class UsageRecorder:
    def __init__(
        self,
        store: UsageStore,
        journal_dir: str | Path,
        *,
        flush_interval: float = 1.0,
        batch_size: int = 10_000,
        fsync_interval: float = 0.2,
        retry_base: float = 0.5,
        max_backoff: float = 30.0,
        stats: StoreStats | None = None,
        on_stored: Callable[[Mapping[SettleKey, int]], None] | None = None,
    ) -> None:
        if flush_interval <= 0 or batch_size <= 0 or fsync_interval <= 0:
            raise ValueError("flush_interval, batch_size and fsync_interval must be positive")
        self._store = store
        self._journal = Journal(journal_dir)
        #: Open streams' usage so far, in the journal's directory (under its lock).
        self._checkpoints = StreamCheckpoints(Path(journal_dir) / "streams")
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._fsync_interval = fsync_interval
        self._retry_base = retry_base
        self._max_backoff = max_backoff
        #: Flush times go here (metrics; `make bench`).
        self._stats = stats
        # Guards everything `record` touches; held for microseconds only.
        self._mutex = threading.Lock()
        #: Events in the active segment.
        self._active = Tally()
        #: Sealed, not yet stored: segment number → its events' tally (ascending).
        self._sealed: dict[int, Tally] = {}
        #: The active segment's events themselves, and the sealed ones' while they fit in
        #: `_KEPT_EVENTS`: a flush in this process sends them as they are instead of
        #: reading its own journal back and parsing every line (≈ 7 µs per event, in a
        #: worker thread holding the GIL against the event loop: bench/READING.md). A
        #: segment not kept (a long store outage, or found at start) is read from disk.
        self._active_events: list[UsageEvent] = []
        self._kept: dict[int, list[UsageEvent]] = {}
        self._kept_count = 0
        #: Batches written down before a crash, to be sent again with the same range.
        self._intents: list[tuple[int, int]] = []
        #: Events not in the journal yet: recorded before `start`, or while it failed.
        self._unwritten: deque[tuple[bytes, UsageEvent]] = deque()
        self._on_stored = on_stored
        self._backlog = 0
        self._store_ok = True
        self._journal_ok = True
        self._opened = False
        # Rotation and fsync run one at a time (the journal's blocking steps).
        self._journal_io = asyncio.Lock()
        # One writer at a time, so two flushes never send the same segments.
        self._write_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- what the proxy sees -------------------------------------------------

    @property
    def backlog(self) -> int:
        """Events recorded but not yet durably in the store."""
        return self._backlog

    @property
    def healthy(self) -> bool:
        """The last store write succeeded and the journal accepts writes."""
        return self._store_ok and self._journal_ok

    def record(self, event: UsageEvent) -> None:
        """Journal and tally `event`. O(1); never blocks, awaits or raises."""
        try:
            line = encode(event)
            with self._mutex:
                self._backlog += 1
                # Behind an unwritten event, queue: the journal keeps recording order.
                if not self._opened or self._unwritten:
                    self._unwritten.append((line, event))
                    return
                try:
                    self._journal.append(line)
                except JournalError as exc:
                    self._unwritten.append((line, event))
                    if self._journal_ok:
                        logger.error("%s; keeping events in memory and retrying", exc)
                    self._journal_ok = False
                    return
                self._active.add(event)
                self._active_events.append(event)
                self._checkpoints.settled(event.request_id)  # journaled: its checkpoint is superseded
        except Exception:  # a metering bug must never fail a request
            logger.exception("could not record usage of request %s", getattr(event, "request_id", "?"))

    def checkpoint(self, event: UsageEvent) -> None:
        """The usage so far of a request still open (`event`, flagged estimated): what a
        crash before its end records (metering/checkpoints.py); its `record` supersedes
        it. One small file write; never awaits or raises."""
        try:
            if self._opened:
                self._checkpoints.write(event)
        except Exception as exc:  # the stream goes on; its final event is recorded as usual
            logger.error("could not checkpoint the usage of request %s: %s", event.request_id, exc)

    # -- life cycle ----------------------------------------------------------

    async def start(self) -> None:
        """Open the journal, take over what a previous process left, and start
        the background tasks. The backlog found is flushed by the first tick."""
        if self._tasks:
            raise RuntimeError("UsageRecorder already started")
        recovered = await asyncio.to_thread(self._journal.open)
        checkpoints = await asyncio.to_thread(self._checkpoints.recover)
        journaled: set[str] = set()  # request ids in the backlog, when a checkpoint may be superseded
        found: dict[int, Tally] = {}
        for number in recovered.segments:
            events = await asyncio.to_thread(self._journal.read_segment, number)
            found[number] = Tally(events)
            if checkpoints:
                journaled.update(event.request_id for event in events)
        in_intents = {n for first, last in recovered.intents for n in range(first, last + 1)}
        with self._mutex:
            for number, tally in found.items():
                if tally.events == 0 and number not in in_intents:
                    self._journal.discard_segment(number)
                    continue
                self._sealed[number] = tally
                self._backlog += tally.events
            self._intents = list(recovered.intents)
            self._opened = True
        if self._sealed:
            logger.info("replaying %d metered events from the journal in %s", self.backlog - len(self._unwritten),
                        self._journal.directory)
        self._retry_unwritten()
        self._replay_checkpoints(checkpoints, journaled)
        self._stopping.clear()
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="costkeeper-metering-flush"),
            asyncio.create_task(self._fsync_loop(), name="costkeeper-metering-fsync"),
        ]

    def _replay_checkpoints(self, checkpoints: list[UsageEvent], journaled: set[str]) -> None:
        """Streams a previous process left open: each recorded once, unless its final
        event is in the backlog already (it died between that write and the clean-up)."""
        for event in checkpoints:
            if event.request_id in journaled:
                self._checkpoints.drop(event.request_id)
            else:
                logger.warning("request %s was still streaming when the previous process stopped: its usage "
                               "until its last checkpoint is recorded, flagged estimated", event.request_id)
                self.record(event)

    async def flush(self) -> None:
        """Seal the active segment and store everything recorded before this
        call. Raises if the store fails (the events stay in the journal)."""
        self._retry_unwritten()
        async with self._write_lock:
            await self._rotate()
            await self._write_sealed()

    async def stop(self, drain_for: float = 10.0) -> None:
        """Stop the background tasks and try, for up to `drain_for` seconds, to
        store the backlog. Whatever is left stays in the journal for the next start."""
        self._stopping.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_for
        if self._tasks:
            # A flush in progress finishes (cancelling it midway would only make
            # the next start send its batch again); one stuck on the store does not.
            _, stuck = await asyncio.wait(self._tasks, timeout=drain_for)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        if not self._opened:
            return
        try:
            await asyncio.wait_for(self._drain(), max(deadline - loop.time(), 0.1))
        except Exception as exc:
            logger.warning("usage store unavailable at shutdown (%s); %d events stay in the journal in %s",
                           type(exc).__name__, self.backlog, self._journal.directory)
        async with self._journal_io:
            self._checkpoints.close()
            await asyncio.to_thread(self._journal.close)
        with self._mutex:
            self._opened = False

    async def _drain(self) -> None:
        attempt = 0
        while True:
            try:
                await self.flush()
                return
            except Exception:
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1

    # -- background ----------------------------------------------------------

    async def _flush_loop(self) -> None:
        failures = 0
        while not await self._stopped_within(self._backoff(failures - 1) if failures else self._flush_interval):
            try:
                await self.flush()
            except Exception as exc:
                failures += 1
                self._store_ok = False
                # The first failure with its traceback; then one line per retry.
                logger.warning(
                    "usage store write failed (attempt %d, %d events in the backlog): %s",
                    failures, self.backlog, exc, exc_info=failures == 1,
                )
            else:
                if failures:
                    logger.info("usage store recovered after %d failed writes", failures)
                failures = 0
                self._store_ok = True

    async def _fsync_loop(self) -> None:
        while not await self._stopped_within(self._fsync_interval):
            self._retry_unwritten()
            try:
                async with self._journal_io:
                    await asyncio.to_thread(self._journal.sync)
            except JournalError as exc:
                logger.error("%s", exc)

    async def _stopped_within(self, seconds: float) -> bool:
        """Sleep `seconds`, or less if `stop()` is called; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    # -- journal and store ---------------------------------------------------

    def _retry_unwritten(self) -> None:
        with self._mutex:
            if not self._opened:
                return
            while self._unwritten:
                line, event = self._unwritten[0]
                try:
                    self._journal.append(line)
                except JournalError:
                    return
                self._unwritten.popleft()
                self._active.add(event)
                self._active_events.append(event)
                self._checkpoints.settled(event.request_id)
            if not self._journal_ok:
                logger.info("the journal accepts writes again")
            self._journal_ok = True

    async def _rotate(self) -> None:
        """Seal the active segment, if it holds anything."""
        async with self._journal_io:
            with self._mutex:
                if self._active.events == 0:
                    return
            next_fd = await asyncio.to_thread(self._journal.prepare_rotation)
            with self._mutex:
                sealed = self._journal.swap(next_fd)
                self._sealed[sealed], self._active = self._active, Tally()
                events, self._active_events = self._active_events, []
                if self._kept_count + len(events) <= _KEPT_EVENTS:
                    self._kept[sealed] = events
                    self._kept_count += len(events)
            # The sealed segment reaches the disk before any batch names it.
            await asyncio.to_thread(self._journal.sync)

    async def _write_sealed(self) -> None:
        while True:
            with self._mutex:
                batch = self._next_batch()
            if batch is None:
                return
            first, last = batch
            if batch in self._intents:
                batch_id = self._journal.batch_id(first, last)
            else:
                batch_id = await asyncio.to_thread(self._journal.begin_batch, first, last)
                self._intents.append(batch)
            events: list[UsageEvent] = []
            for number in range(first, last + 1):
                kept = self._kept.get(number)
                events.extend(kept if kept is not None else
                              await asyncio.to_thread(self._journal.read_segment, number))
            started = time.perf_counter()
            applied = await self._store.write_batch(batch_id, events)
            if self._stats is not None:
                self._stats.on_flush(time.perf_counter() - started, len(events))
            if not applied:
                logger.info("batch %s was already stored; not counted again", batch_id)
            await asyncio.to_thread(self._journal.end_batch, first, last)
            self._intents.remove(batch)
            stored: list[Tally] = []
            with self._mutex:
                for number in range(first, last + 1):
                    tally = self._sealed.pop(number, None)
                    self._kept_count -= len(self._kept.pop(number, ()))
                    if tally is not None:
                        self._backlog -= tally.events
                        stored.append(tally)
            if self._on_stored is not None:
                for tally in stored:
                    if tally.settled:
                        self._on_stored(tally.settled)

    def _next_batch(self) -> tuple[int, int] | None:
        """The oldest written-down batch, else sealed segments from the oldest
        on, up to `batch_size` events (at least one segment)."""
        if self._intents:
            return min(self._intents)
        numbers = sorted(self._sealed)
        if not numbers:
            return None
        first = last = numbers[0]
        total = self._sealed[first].events
        for number in numbers[1:]:
            if number != last + 1 or total + self._sealed[number].events > self._batch_size:
                break
            last, total = number, total + self._sealed[number].events
        return first, last

    def _backoff(self, attempt: int) -> float:
        """Exponential from `retry_base`, capped, with jitter so that replicas
        hitting the same outage do not retry in lockstep."""
        delay = min(self._max_backoff, self._retry_base * 2 ** max(attempt, 0))
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret
