"""An open stream's usage checkpoints (metering/checkpoints.py) through the recorder,
against both stores: a crash at any moment meters the stream exactly once — its final
event if it was journaled, else its last checkpoint, flagged estimated.

Crashes are `test_recorder.crash`: the recorder abandoned as SIGKILL leaves it. The
real SIGKILL of a proxy mid-conversation is tests/e2e/test_bidirectional_bounds.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from metering.recorder import UsageRecorder
from metering.store import Store
from tests.metering.test_recorder import MakeEvent, crash, stored

pytestmark = pytest.mark.anyio


def checkpoint_files(journal: Path) -> list[str]:
    directory = journal / "streams"
    return sorted(path.name for path in directory.iterdir()) if directory.is_dir() else []


async def estimated_and_input(store: Store) -> tuple[int, int]:
    """(estimated requests, input tokens) stored: DynamoDB keeps counters, not events."""
    rows = await store.usage_summary(0, None, [])
    return sum(row.estimated_requests for row in rows), sum(row.input_tokens for row in rows)


async def restart(store: Store, journal: Path) -> UsageRecorder:
    recorder = UsageRecorder(store, journal, flush_interval=60)
    await recorder.start()
    await recorder.flush()
    return recorder


async def test_a_crash_mid_stream_records_its_last_checkpoint_once(store: Store, make_event: MakeEvent,
                                                                   tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    first = UsageRecorder(store, journal, flush_interval=60)
    await first.start()
    first.checkpoint(make_event("voice-1", input_tokens=10, cost_pico_usd=100, estimated=True))
    first.checkpoint(make_event("voice-1", input_tokens=30, cost_pico_usd=300, estimated=True))  # supersedes
    await crash(first)

    second = await restart(store, journal)
    assert await stored(store) == (1, 300)
    assert await estimated_and_input(store) == (1, 30)
    assert checkpoint_files(journal) == []
    await second.stop()
    assert not (journal / "streams").exists()  # empty: removed, the journal directory stays clean
    third = await restart(store, journal)  # nothing left to replay
    assert await stored(store) == (1, 300)
    await third.stop()


async def test_the_final_event_supersedes_the_checkpoints(store: Store, make_event: MakeEvent,
                                                          tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    first = UsageRecorder(store, journal, flush_interval=60)
    await first.start()
    first.checkpoint(make_event("voice-2", cost_pico_usd=100, estimated=True))
    assert len(checkpoint_files(journal)) == 1
    first.record(make_event("voice-2", cost_pico_usd=500))
    assert checkpoint_files(journal) == []
    await crash(first)  # before any flush: the final is in the journal only

    second = await restart(store, journal)
    assert await stored(store) == (1, 500)
    assert await estimated_and_input(store) == (0, 100)
    await second.stop()


async def test_a_crash_between_the_final_and_the_clean_up_counts_the_final_once(
        store: Store, make_event: MakeEvent, tmp_path: Path) -> None:
    """The final event is journaled, the checkpoint file still there (the process died
    between the two): the backlog holds the final, so the checkpoint is only removed."""
    journal = tmp_path / "journal"
    first = UsageRecorder(store, journal, flush_interval=60)
    await first.start()
    first.record(make_event("voice-3", cost_pico_usd=500))
    first.checkpoint(make_event("voice-3", cost_pico_usd=100, estimated=True))  # as if never removed
    await crash(first)

    second = await restart(store, journal)
    assert await stored(store) == (1, 500)
    assert checkpoint_files(journal) == []
    await second.stop()


async def test_a_crash_during_the_replay_records_the_checkpoint_once(store: Store, make_event: MakeEvent,
                                                                     tmp_path: Path) -> None:
    """The replayed checkpoint reached the journal, the process died before removing
    its file: the next start finds it in the backlog."""
    journal = tmp_path / "journal"
    first = UsageRecorder(store, journal, flush_interval=60)
    await first.start()
    first.checkpoint(make_event("voice-4", cost_pico_usd=100, estimated=True))
    saved = {name: (journal / "streams" / name).read_bytes() for name in checkpoint_files(journal)}
    await crash(first)

    second = UsageRecorder(store, journal, flush_interval=60)
    await second.start()  # replays it into the journal, removes the file
    for name, content in saved.items():
        (journal / "streams" / name).write_bytes(content)  # as if the removal never happened
    await crash(second)

    third = await restart(store, journal)
    assert await stored(store) == (1, 100)
    assert checkpoint_files(journal) == []
    await third.stop()


async def test_a_checkpoint_that_cannot_be_written_fails_nothing(sqlite_store: Store, make_event: MakeEvent,
                                                                 tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    recorder = UsageRecorder(sqlite_store, journal, flush_interval=60)
    await recorder.start()
    (journal / "streams").write_text("not a directory")
    recorder.checkpoint(make_event("voice-5", estimated=True))  # logged, not raised
    recorder.record(make_event("voice-5"))
    await recorder.flush()
    assert await stored(sqlite_store) == (1, 10**9)
    await recorder.stop()
