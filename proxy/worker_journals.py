"""The metering journals of `server.workers` (proxy/workers.py): where each worker keeps
its own, and storing what workers that no longer run left in theirs.

Apart from the supervisor: every serving process (proxy/serve.py) recovers retired
journals before it serves, and the supervisor names each worker's directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path
from typing import Any

from proxy.config import Config

__all__ = ["recover_retired_journals", "worker_journal_dir"]

logger = logging.getLogger("proxy.workers")

_RETIRED = re.compile(r"worker-(\d+)")


def worker_journal_dir(journal_dir: str, index: int) -> str:
    """Worker 0 keeps the configured journal, so one worker is exactly the single process."""
    return journal_dir if index == 0 else os.path.join(journal_dir, f"worker-{index}")


async def recover_retired_journals(config: Config) -> None:
    """Store the usage that workers of index ≥ `server.workers` left in their journals
    (the proxy ran with more workers before), then remove the emptied directories.
    Run by worker 0, or the single process, before it serves. Whatever cannot be
    stored (the store out of reach) stays where it is, for the next start; it never
    keeps the proxy from serving."""
    from proxy.app import create_store

    retired = await asyncio.to_thread(_retired_journals, Path(config.store.journal_path()), config.server.workers)
    if not retired:
        return
    store = create_store(config)
    try:
        await store.open()
        for index, path in retired:
            try:
                await _store_journal(config, store, index, path)
            except Exception:
                logger.exception("journal %s of retired worker %d: not stored, kept for the next start", path, index)
    finally:
        await store.aclose()


async def _store_journal(config: Config, store: Any, index: int, path: Path) -> None:
    from metering.journal import JournalBusy
    from metering.recorder import UsageRecorder

    recorder = UsageRecorder(
        store, path,
        flush_interval=config.metering.flush_interval,
        batch_size=config.metering.batch_size,
        fsync_interval=config.metering.fsync_interval,
        retry_base=config.store.retry_base,
        max_backoff=config.store.retry_max,
    )
    try:
        await recorder.start()  # the recovery path of every start: sealed segments, batches in flight
    except JournalBusy:
        logger.warning("journal %s of retired worker %d is in use by another process; left as it is", path, index)
        return
    found = recorder.backlog
    await recorder.stop(config.metering.drain_timeout)
    if recorder.backlog:
        logger.warning("%d metered events of retired worker %d stay in %s until the next start",
                       recorder.backlog, index, path)
        return
    if found:
        logger.info("stored %d metered events that retired worker %d left in %s", found, index, path)
    await asyncio.to_thread(_remove_empty_journal, path)


def _retired_journals(base: Path, workers: int) -> list[tuple[int, Path]]:
    """(index, directory) of the worker journals in `base` no worker of this run uses."""
    try:
        entries = list(base.iterdir())
    except FileNotFoundError:
        return []
    return sorted((int(match.group(1)), path) for path in entries
                  if (match := _RETIRED.fullmatch(path.name)) and int(match.group(1)) >= workers and path.is_dir())


def _remove_empty_journal(path: Path) -> None:
    """Only the files of a journal holding nothing (its id and lock file) are removed."""
    if {entry.name for entry in path.iterdir()} <= {"journal-id", "lock"}:
        for name in ("journal-id", "lock"):
            (path / name).unlink(missing_ok=True)
        path.rmdir()
