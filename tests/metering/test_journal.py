from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from metering.events import UsageEvent
from metering.journal import Journal, JournalBusy, Recovered, encode

MakeEvent = Callable[..., UsageEvent]


def seal(journal: Journal) -> int:
    return journal.swap(journal.prepare_rotation())


def test_segments_round_trip(tmp_path: Path, make_event: MakeEvent) -> None:
    journal = Journal(tmp_path)
    assert journal.open().segments == ()
    journal.append(encode(make_event("a", quota_scope="acme", reserved_pico_usd=3)))
    journal.append(encode(make_event("b")))
    first = seal(journal)
    journal.append(encode(make_event("c")))
    second = seal(journal)
    journal.sync()
    assert [e.request_id for e in journal.read_segment(first)] == ["a", "b"]
    assert journal.read_segment(first)[0] == make_event("a", quota_scope="acme", reserved_pico_usd=3)
    assert [e.request_id for e in journal.read_segment(second)] == ["c"]
    journal.close()


def test_a_new_process_seals_what_the_last_one_left(tmp_path: Path, make_event: MakeEvent) -> None:
    journal = Journal(tmp_path)
    journal.open()
    sealed = seal(journal)
    journal.append(encode(make_event("in-active")))
    active = journal.active_number
    journal.close()  # as a killed process: no rotation, no clean-up

    again = Journal(tmp_path)
    recovered = again.open()
    assert recovered.segments == (sealed, active) and recovered.intents == ()
    assert again.active_number == active + 1
    assert again.journal_id == journal.journal_id  # batch ids stay stable
    assert [e.request_id for e in again.read_segment(active)] == ["in-active"]
    again.close()


def test_one_owner_at_a_time(tmp_path: Path) -> None:
    first = Journal(tmp_path)
    first.open()
    with pytest.raises(JournalBusy):
        Journal(tmp_path).open()
    first.close()
    second = Journal(tmp_path)
    second.open()
    second.close()


def test_batches_survive_a_crash_and_finish_their_clean_up(tmp_path: Path, make_event: MakeEvent) -> None:
    journal = Journal(tmp_path)
    journal.open()
    numbers = []
    for name in ("a", "b", "c"):
        journal.append(encode(make_event(name)))
        numbers.append(seal(journal))
    batch_id = journal.begin_batch(numbers[0], numbers[1])
    assert batch_id == f"{journal.journal_id}:{numbers[0]}-{numbers[1]}"
    journal.close()  # crashed before the store answered

    again = Journal(tmp_path)
    recovered = again.open()
    assert recovered.intents == ((numbers[0], numbers[1]),)
    assert again.batch_id(numbers[0], numbers[1]) == batch_id
    again.end_batch(numbers[0], numbers[1])
    assert set(again.segments_on_disk()) == {numbers[2], again.active_number}
    again.close()

    # Crashed between `.done` and the deletion of the segments: the next open finishes.
    third = Journal(tmp_path)
    third.open()
    third.begin_batch(numbers[2], numbers[2])
    (tmp_path / f"batch-{numbers[2]:012d}-{numbers[2]:012d}.intent").rename(
        tmp_path / f"batch-{numbers[2]:012d}-{numbers[2]:012d}.done")
    third.close()
    fourth = Journal(tmp_path)
    recovered = fourth.open()
    assert numbers[2] not in recovered.segments and recovered.intents == ()
    fourth.close()


def test_a_torn_last_line_is_skipped(tmp_path: Path, make_event: MakeEvent) -> None:
    journal = Journal(tmp_path)
    journal.open()
    journal.append(encode(make_event("whole")))
    journal.append(encode(make_event("torn"))[:40])  # a power loss mid-line
    number = seal(journal)
    assert [e.request_id for e in journal.read_segment(number)] == ["whole"]
    journal.close()


def test_a_journal_reopened_with_nothing_to_replay_gets_a_new_id(tmp_path: Path, make_event: MakeEvent) -> None:
    """Segment numbers start again from 1 after a clean shutdown: with the old id the
    first batches of the next process would carry ids the store has already applied."""
    journal = Journal(tmp_path)
    journal.open()
    journal.append(encode(make_event("a")))
    first = seal(journal)
    stored = journal.begin_batch(first, first)
    journal.end_batch(first, first)
    journal.close()

    again = Journal(tmp_path)
    assert again.open() == Recovered((), ())
    assert again.active_number == first and again.batch_id(first, first) != stored
    again.close()


def test_sync_fsyncs_the_directory_only_after_a_segment_was_created(
    tmp_path: Path, make_event: MakeEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory changes only when a file is created or removed: a `sync` of appends
    alone (the fsync loop, every 200 ms) needs no directory fsync (issue #20)."""
    journal = Journal(tmp_path)
    journal.open()
    synced: list[str] = []
    monkeypatch.setattr(journal, "_fsync_directory", lambda: synced.append("dir"))
    journal.append(encode(make_event("a")))
    journal.sync()
    assert synced == []
    next_fd = journal.prepare_rotation()  # a new file: its name must reach the disk
    journal.swap(next_fd)
    journal.sync()
    assert synced == ["dir"]
    journal.append(encode(make_event("b")))
    journal.sync()
    assert synced == ["dir"]
    journal.close()
