"""The local journal: every usage event on disk before it is aggregated (DESIGN.md §4).

A directory of numbered, append-only segment files, one JSON event per line
(`UsageEvent.to_record`: fields by name, so a line written by an older version
reads with its own units, e.g. micro-USD before issue #16), owned by one process
(an exclusive `flock` on `lock`)::

    journal-id                        random id of this journal, prefix of its batch ids
    segment-000000000007.jsonl        sealed: complete, never written again
    segment-000000000008.jsonl        active: `append` writes here
    batch-000000000005-000000000007.intent   segments 5..7 are being flushed as one batch
    batch-000000000003-000000000004.done     that batch is stored; its segments may go

Batch identity is stable across a crash: a batch is a range of sealed segments,
and the range is written down (`.intent`, fsynced) before the store sees it, so
a replay sends exactly the same events under exactly the same id and the store's
batch marker turns a second application into a no-op. Once stored the intent
becomes `.done`, the segments are deleted, then the `.done` file.

`append` is one `write(2)` of a whole line to the page cache — it survives the
process being killed; `sync` (called in batches from a worker thread, never
per event) makes it survive power loss too. The class is not thread-safe: its
owner serializes `append` and `swap` (the pipeline does, under one lock), and
runs the blocking steps (`prepare_rotation`, `sync`, batch files) one at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from metering.events import UsageEvent
from metering.journal_line import journal_line

__all__ = ["Journal", "JournalBusy", "JournalError", "Recovered"]

logger = logging.getLogger(__name__)

_SEGMENT = re.compile(r"segment-(\d{12})\.jsonl")
_BATCH = re.compile(r"batch-(\d{12})-(\d{12})\.(intent|done)")


class JournalError(Exception):
    """The journal cannot be used (a file cannot be written or read)."""


class JournalBusy(JournalError):
    """Another process owns the journal directory."""


@dataclass(frozen=True, slots=True)
class Recovered:
    """What `open` found: sealed segments not yet stored, and batches in flight."""

    #: Segment numbers, ascending; every one is sealed (the previous active one included).
    segments: tuple[int, ...]
    #: (first, last) segment ranges written down as batches but not known to be stored.
    intents: tuple[tuple[int, int], ...]


def encode(event: UsageEvent) -> bytes:
    """One journal line: the event as compact JSON, newline-terminated (metering/journal_line.py)."""
    return journal_line(event)


def _segment_name(number: int) -> str:
    return f"segment-{number:012d}.jsonl"


def _batch_name(first: int, last: int, state: str) -> str:
    return f"batch-{first:012d}-{last:012d}.{state}"


class Journal:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.journal_id = ""
        self._lock_fd: int | None = None
        self._active_fd: int | None = None
        self._active_number = 0
        self._active_size = 0
        self._dirty = False
        #: A segment file was created since the directory's last fsync (`prepare_rotation`):
        #: only then does `sync` fsync the directory too, whose entries change only when
        #: a file is created or removed (each removal fsyncs it itself).
        self._new_entry = False
        #: Sealed segments' fds, closed by the next `sync` after their fsync.
        self._sealed_fds: list[int] = []

    # -- life cycle --------------------------------------------------------

    def open(self) -> Recovered:
        """Lock the directory, finish interrupted clean-ups, seal what a previous
        process left active, and open a fresh active segment."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise JournalBusy(f"journal directory {self.directory} is in use by another process") from None
        self._lock_fd = lock_fd
        segments: set[int] = set()
        intents: list[tuple[int, int]] = []
        for path in self.directory.iterdir():
            if match := _SEGMENT.fullmatch(path.name):
                segments.add(int(match.group(1)))
        for path in sorted(self.directory.iterdir()):
            if match := _BATCH.fullmatch(path.name):
                first, last, state = int(match.group(1)), int(match.group(2)), match.group(3)
                if state == "done":  # stored: finish the clean-up that was interrupted
                    self._remove_range(first, last, segments)
                    path.unlink(missing_ok=True)
                else:
                    intents.append((first, last))
        # Nothing left to replay: segment numbers start again from 1, so the batch ids
        # must not — the store would take batch `id:1-1` for one it already applied.
        self.journal_id = self._read_or_create_id(fresh=not segments and not intents)
        self._active_number = max(segments, default=0) + 1
        self._open_active()
        return Recovered(tuple(sorted(segments)), tuple(sorted(intents)))

    def close(self) -> None:
        """fsync and close; an empty active segment is removed."""
        empty = self._active_fd is not None and self._active_size == 0
        fds = [*self._sealed_fds, *([self._active_fd] if self._active_fd is not None else [])]
        self._sealed_fds, self._active_fd = [], None
        for fd in fds:
            with contextlib.suppress(OSError):
                os.fsync(fd)
            os.close(fd)
        if empty:
            (self.directory / _segment_name(self._active_number)).unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _read_or_create_id(self, fresh: bool) -> str:
        path = self.directory / "journal-id"
        if not fresh:
            with contextlib.suppress(FileNotFoundError):
                return path.read_text().strip()
        journal_id = secrets.token_hex(8)
        self._write_durably(path, journal_id)
        return journal_id

    # -- writing -----------------------------------------------------------

    @property
    def active_number(self) -> int:
        return self._active_number

    def append(self, line: bytes) -> None:
        """Write one encoded event to the active segment. Raises JournalError
        (the segment is left as it was: a short write is truncated away)."""
        fd = self._active_fd
        if fd is None:
            raise JournalError("the journal is not open")
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._active_size)
            raise JournalError(f"cannot append to the journal in {self.directory}: {exc}") from exc
        self._active_size += written
        self._dirty = True

    # Rotation in three steps so that the caller's lock is held only for the
    # swap: creating a file and fsyncing a directory can take milliseconds.

    def prepare_rotation(self) -> int:
        """Create the next segment file; its fd. Blocking: run in a thread."""
        path = self.directory / _segment_name(self._active_number + 1)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._new_entry = True
        return fd

    def swap(self, next_fd: int) -> int:
        """Make `next_fd` the active segment; the number of the segment sealed."""
        sealed_fd, sealed = self._active_fd, self._active_number
        self._active_fd, self._active_number, self._active_size = next_fd, sealed + 1, 0
        self._dirty = False
        if sealed_fd is not None:
            self._sealed_fds.append(sealed_fd)
        return sealed

    def sync(self) -> None:
        """fsync what was appended since the last call: the segments sealed
        since (then closed) and the active one, and the directory if a segment was
        created since. Blocking: run in a thread."""
        sealed, self._sealed_fds = self._sealed_fds, []
        fd, dirty, self._dirty = self._active_fd, self._dirty, False
        new_entry, self._new_entry = self._new_entry, False
        if not sealed and not dirty and not new_entry:
            return
        try:
            for old in sealed:
                os.fsync(old)
            if fd is not None and dirty:
                os.fsync(fd)
            if new_entry:
                self._fsync_directory()
        except OSError as exc:
            self._new_entry = self._new_entry or new_entry  # the next sync tries the directory again
            raise JournalError(f"cannot fsync the journal in {self.directory}: {exc}") from exc
        finally:
            for old in sealed:
                os.close(old)

    def _open_active(self) -> None:
        path = self.directory / _segment_name(self._active_number)
        self._active_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._active_size = os.fstat(self._active_fd).st_size
        self._fsync_directory()

    # -- batches -----------------------------------------------------------

    def batch_id(self, first: int, last: int) -> str:
        return f"{self.journal_id}:{first}-{last}"

    def begin_batch(self, first: int, last: int) -> str:
        """Write down (durably) that segments first..last are one batch; its id."""
        self._write_durably(self.directory / _batch_name(first, last, "intent"), self.batch_id(first, last))
        return self.batch_id(first, last)

    def end_batch(self, first: int, last: int) -> None:
        """The batch is stored: drop its segments."""
        intent = self.directory / _batch_name(first, last, "intent")
        done = self.directory / _batch_name(first, last, "done")
        with contextlib.suppress(FileNotFoundError):  # a retry after an interrupted end
            os.replace(intent, done)
        self._fsync_directory()
        self._remove_range(first, last, None)
        done.unlink(missing_ok=True)

    def read_segment(self, number: int) -> list[UsageEvent]:
        """The events of a sealed segment. A line that does not parse (torn by a
        power loss at the very end) is skipped and reported."""
        path = self.directory / _segment_name(number)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        events = []
        for index, line in enumerate(data.split(b"\n")):
            if not line.strip():
                continue
            try:
                events.append(UsageEvent.from_record(json.loads(line)))
            except (ValueError, TypeError, KeyError) as exc:
                logger.error("journal %s line %d is unreadable (%s); skipped", path, index + 1, exc)
        return events

    def discard_segment(self, number: int) -> None:
        """Delete a sealed segment that holds no event."""
        self._remove_range(number, number, None)

    def segments_on_disk(self) -> Iterator[int]:
        for path in self.directory.iterdir():
            if match := _SEGMENT.fullmatch(path.name):
                yield int(match.group(1))

    def _remove_range(self, first: int, last: int, known: set[int] | None) -> None:
        for number in range(first, last + 1):
            (self.directory / _segment_name(number)).unlink(missing_ok=True)
            if known is not None:
                known.discard(number)
        self._fsync_directory()

    def _write_durably(self, path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        self._fsync_directory()

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
