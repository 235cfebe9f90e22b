"""Refused credentials over the last hour, by access key id and reason, in bounded memory.

Every 403 the data port answers leaves an access-log line and a count in
`costkeeper_auth_failures_total{reason}` (proxy/app.py); this tally is what lets
an operator see *which* key keeps failing (a leaked key being tried, an app
with a rotated secret), on the dashboard through `GET /v1/auth-failures`.

Memory: at most `max_entries` (access key id, reason) pairs, each with one count
per `bucket` seconds of the window (12 of 5 minutes for an hour). A client that
sprays random key ids cannot grow it: when the table is full, the least-failing
tenth (the oldest first among equals) is folded into one "other keys" row, so
the totals stay exact and a key that fails repeatedly stays listed.

With several workers (proxy/workers.py) each keeps its own tally and writes it
to the shared metrics directory about once a second; the admin port sums them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FailureTally", "OTHER_KEYS", "TallyRow"]

logger = logging.getLogger(__name__)

#: The row failures of keys no longer listed are folded into.
OTHER_KEYS = "(other keys)"
_FILE_PREFIX = "auth-failures-"


@dataclass
class _Entry:
    org: str | None
    app: str | None
    #: (bucket start, count), oldest first; only buckets within the window.
    buckets: deque[list[int]] = field(default_factory=deque)
    total: int = 0
    last_seen: float = 0.0


@dataclass(frozen=True, slots=True)
class TallyRow:
    access_key_id: str | None
    reason: str
    org: str | None
    app: str | None
    count: int
    last_seen: float

    def as_dict(self) -> dict[str, Any]:
        return {"access_key_id": self.access_key_id, "reason": self.reason, "org": self.org, "app": self.app,
                "count": self.count, "last_seen": self.last_seen}


_Key = tuple[str | None, str]


class FailureTally:
    def __init__(self, *, max_entries: int = 1000, window: float = 3600.0, bucket: int = 300) -> None:
        self.max_entries = max_entries
        self.window = window
        self.bucket = bucket
        self._entries: dict[_Key, _Entry] = {}
        #: Where this process publishes its tally for the admin port of another (workers).
        self._publish_to: Path | None = None
        self._changed = False

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, access_key_id: str | None, reason: str, org: str | None = None, app: str | None = None,
               now: float | None = None, count: int = 1) -> None:
        now = time.time() if now is None else now
        key = (access_key_id, reason)
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.max_entries:
                self._make_room(now)
            entry = self._entries[key] = _Entry(org, app)
        if org is not None:
            entry.org, entry.app = org, app
        self._add(entry, int(now // self.bucket) * self.bucket, count, now)
        self._changed = True

    def rows(self, now: float | None = None) -> list[TallyRow]:
        """This process's failures within the window, most first."""
        now = time.time() if now is None else now
        since = now - self.window
        rows = []
        for (access_key_id, reason), entry in self._entries.items():
            count = sum(n for start, n in entry.buckets if start + self.bucket > since)
            if count:
                rows.append(TallyRow(access_key_id, reason, entry.org, entry.app, count, entry.last_seen))
        return sorted(rows, key=lambda row: (-row.count, -row.last_seen, row.reason, row.access_key_id or ""))

    def _add(self, entry: _Entry, start: int, count: int, now: float) -> None:
        buckets = entry.buckets
        if buckets and buckets[-1][0] == start:
            buckets[-1][1] += count
        else:
            buckets.append([start, count])
        entry.total += count
        entry.last_seen = max(entry.last_seen, now)
        oldest = now - self.window - self.bucket
        while buckets and buckets[0][0] < oldest:
            entry.total -= buckets.popleft()[1]

    def _make_room(self, now: float) -> None:
        """Drop what left the window; if still full, fold the least-failing tenth into
        `OTHER_KEYS` (one pass every max_entries/10 new keys, not one per key)."""
        since = now - self.window - self.bucket
        for key in [key for key, entry in self._entries.items() if entry.last_seen < since]:
            del self._entries[key]
        if len(self._entries) < self.max_entries:
            return
        candidates = sorted((item for item in self._entries.items() if item[0][0] != OTHER_KEYS),
                            key=lambda item: (item[1].total, item[1].last_seen))
        for key, _ in candidates[: max(1, self.max_entries // 10)]:
            folded = self._entries.pop(key)
            other = self._entries.setdefault((OTHER_KEYS, "*"), _Entry(None, None))
            for start, count in folded.buckets:
                self._add(other, start, count, folded.last_seen)

    # -- several workers: publish and merge ------------------------------------------

    def publish_to(self, directory: str) -> None:
        """Write this tally to `directory` on every `publish()` (the worker's watch loop)."""
        self._publish_to = Path(directory) / f"{_FILE_PREFIX}{os.getpid()}.json"
        self._changed = True

    def publish(self) -> None:
        if self._publish_to is None or not self._changed:
            return
        self._changed = False
        document = self._entries_as_published()
        temporary = self._publish_to.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(document, separators=(",", ":")))
            os.replace(temporary, self._publish_to)
        except OSError as exc:  # never fail the watch loop over the dashboard's table
            logger.warning("could not publish the authentication-failure tally: %s", exc)

    def merged_rows(self, now: float | None = None) -> list[TallyRow]:
        """The rows of every worker publishing beside this one, this one's live."""
        if self._publish_to is None:
            return self.rows(now)
        # Room for every worker's rows (each at most max_entries + 1): nothing is folded twice.
        merged = FailureTally(max_entries=self.max_entries * 64, window=self.window, bucket=self.bucket)
        self._merge_into(merged, self._entries_as_published())
        for path in self._publish_to.parent.glob(f"{_FILE_PREFIX}*.json"):
            if path == self._publish_to:
                continue
            try:
                self._merge_into(merged, json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                logger.warning("skipped the authentication-failure tally %s: %s", path.name, exc)
        return merged.rows(now)

    def _entries_as_published(self) -> list[list[Any]]:
        return [[key[0], key[1], entry.org, entry.app, entry.last_seen, list(entry.buckets)]
                for key, entry in self._entries.items()]

    @staticmethod
    def _merge_into(tally: FailureTally, document: Iterable[list[Any]]) -> None:
        for access_key_id, reason, org, app, last_seen, buckets in document:
            for start, count in buckets:
                tally.record(access_key_id, reason, org, app, now=float(start), count=int(count))
            entry = tally._entries.get((access_key_id, reason))
            if entry is not None:
                entry.last_seen = max(entry.last_seen, float(last_seen))
