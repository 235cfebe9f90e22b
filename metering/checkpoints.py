"""The usage of streams still open, on disk, so a killed process meters them anyway.

A usage event is journaled when its request ends (metering/recorder.py). A
bidirectional stream lasts up to 8 minutes of speech: a proxy killed (SIGKILL, the
OOM killer, a node lost) in the middle would lose all of it. So while it runs, the
stream's usage so far — the event its end would record, flagged estimated — is
written here, one file per stream, replaced at each checkpoint::

    <journal dir>/streams/<sha256 of the request id>.json    one `UsageEvent.to_record()`

Metered exactly once, whatever the moment of a crash:

* The stream ends: its final event is journaled, *then* its file is removed (the
  final supersedes every checkpoint). Nothing awaits in between, so no flush can
  store that event first.
* A crash leaves a file: the next start (`UsageRecorder.start`) records it as the
  stream's event — unless an event of the same request id is in the journal's
  unflushed backlog, which is the final itself (the crash came between its journal
  write and the file's removal): the file is then just removed. A replayed file is
  journaled before it is removed, so a crash during the replay is the same case.

A file is written whole (a temporary file, then `rename(2)`): a crash leaves the
previous checkpoint or the new one, never a torn one. Like the journal's `append`,
it survives the process being killed at once (the page cache); it is not fsynced,
so a power loss can lose the last checkpoints. The directory lives in the journal's,
under its lock: one process owns both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

from metering.events import UsageEvent
from metering.journal import encode

__all__ = ["StreamCheckpoints"]

logger = logging.getLogger(__name__)

_SUFFIX = ".json"


class StreamCheckpoints:
    """Checkpoint files in `directory`. Not thread-safe: the event loop calls it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        #: Request ids whose file this process wrote (or found) and has not removed yet.
        self._open: set[str] = set()

    def write(self, event: UsageEvent) -> None:
        """Replace the stream's checkpoint with `event`. Raises OSError."""
        path = self._path(event.request_id)
        if not self._open:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(encode(event))
        os.replace(tmp, path)
        self._open.add(event.request_id)

    def settled(self, request_id: str) -> None:
        """The request's event is in the journal: its checkpoint, if any, goes. O(1) otherwise."""
        if request_id not in self._open:
            return
        self._open.discard(request_id)
        try:
            self._path(request_id).unlink(missing_ok=True)
        except OSError as exc:
            # Left behind, it would be replayed once the final is flushed: counted twice.
            logger.error("cannot remove the usage checkpoint of request %s (%s): remove %s by hand before the "
                         "next start", request_id, exc, self._path(request_id))

    def recover(self) -> list[UsageEvent]:
        """The checkpoints a previous process left, oldest first (each now pending here)."""
        if not self.directory.is_dir():
            return []
        found: list[tuple[float, UsageEvent]] = []
        for path in self.directory.iterdir():
            if path.name.endswith(".tmp"):  # a write the crash interrupted: the previous file stands
                path.unlink(missing_ok=True)
                continue
            if not path.name.endswith(_SUFFIX):
                continue
            try:
                event = UsageEvent.from_record(json.loads(path.read_bytes()))
            except (OSError, ValueError, TypeError, KeyError) as exc:
                logger.error("usage checkpoint %s is unreadable (%s); left in place", path, exc)
                continue
            found.append((event.timestamp, event))
            self._open.add(event.request_id)
        return [event for _, event in sorted(found, key=lambda pair: pair[0])]

    def drop(self, request_id: str) -> None:
        """Remove a recovered checkpoint whose request's final event is already journaled."""
        self._open.add(request_id)
        self.settled(request_id)

    def close(self) -> None:
        """The process stops: an empty directory goes (a retired worker's journal is then
        empty, proxy/worker_journals.py); checkpoints of streams still open stay."""
        with contextlib.suppress(OSError):
            self.directory.rmdir()

    def _path(self, request_id: str) -> Path:
        # Hashed: a request id is Bedrock's header, not a file name to trust.
        return self.directory / (hashlib.sha256(request_id.encode()).hexdigest()[:40] + _SUFFIX)
