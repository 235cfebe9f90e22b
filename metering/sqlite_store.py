"""The embedded store: usage events and issued keys in one SQLite file.

One connection behind a `threading.Lock`, shared by the threads that
`asyncio.to_thread` lends the proxy: SQLite serializes writers anyway, and one
connection keeps the cost of a write to a lock and a WAL append. WAL lets the
`costkeeper usage` CLI read while the proxy writes; `synchronous=NORMAL` in WAL
mode can lose the last transactions on power loss but never corrupts the file
(https://www.sqlite.org/pragma.html#pragma_synchronous).

The file holds issued secrets, so it is created with mode 0600; SQLite gives its
`-wal` and `-shm` files the database file's permissions.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType

from metering.events import UsageEvent
from metering.store import (
    IssuedKey,
    KeyRecord,
    UsageRow,
    generate_access_key_id,
    generate_secret,
    normalize_group_by,
)

__all__ = ["SQLiteStore"]

logger = logging.getLogger(__name__)

# `day` is stored (derived from `ts` at write time) so that grouping and the
# per-day quota lookups use an index instead of computing dates per row.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_events (
    request_id         TEXT PRIMARY KEY,
    ts                 REAL    NOT NULL,
    day                TEXT    NOT NULL,
    org                TEXT    NOT NULL,
    app                TEXT    NOT NULL,
    operation          TEXT    NOT NULL,
    requested_model    TEXT    NOT NULL,
    model              TEXT    NOT NULL,
    input_tokens       INTEGER NOT NULL,
    output_tokens      INTEGER NOT NULL,
    cache_read_tokens  INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cost_micro_usd     INTEGER NOT NULL,
    priced             INTEGER NOT NULL,
    latency_ms         REAL    NOT NULL,
    first_byte_ms      REAL,
    status             INTEGER NOT NULL,
    estimated          INTEGER NOT NULL
);
-- Reports: a time range, then grouping.
CREATE INDEX IF NOT EXISTS usage_events_ts ON usage_events (ts);
-- Quotas: one day's spend per org (or org and app) and model.
CREATE INDEX IF NOT EXISTS usage_events_day_scope ON usage_events (day, org, app, model);
CREATE TABLE IF NOT EXISTS api_keys (
    access_key_id TEXT PRIMARY KEY,
    org           TEXT NOT NULL,
    app           TEXT NOT NULL,
    secret        TEXT NOT NULL,
    created_at    REAL NOT NULL,
    revoked_at    REAL
);
"""

_EVENT_COLUMNS = (
    "request_id", "ts", "day", "org", "app", "operation", "requested_model", "model",
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "cost_micro_usd", "priced", "latency_ms", "first_byte_ms", "status", "estimated",
)
_INSERT_EVENT = (
    f"INSERT OR IGNORE INTO usage_events ({', '.join(_EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_EVENT_COLUMNS))})"
)
_KEY_COLUMNS = "access_key_id, org, app, secret, created_at, revoked_at"
_SUMS = """
    COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens),
    SUM(cache_write_tokens), SUM(cost_micro_usd), SUM(estimated), SUM(1 - priced)
"""
_MEMORY = ":memory:"


def _create_private(path: str) -> None:
    """Create `path` with mode 0600 unless it exists (O_EXCL: no race with a creator)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            logger.warning("%s holds issued secrets but has mode %03o; consider chmod 600", path, mode)
        return
    os.close(fd)


def _event_params(event: UsageEvent) -> tuple[object, ...]:
    return (
        event.request_id, event.timestamp, event.day, event.org, event.app, event.operation,
        event.requested_model, event.model, event.input_tokens, event.output_tokens,
        event.cache_read_tokens, event.cache_write_tokens, event.cost_micro_usd,
        int(event.priced), event.latency_ms, event.first_byte_ms, event.status,
        int(event.estimated),
    )


class SQLiteStore:
    """`UsageStore` and `KeyStore` in one SQLite file (or `":memory:"`)."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self.path = os.fspath(path)
        self._clock = clock
        self._lock = threading.Lock()
        if self.path != _MEMORY:
            _create_private(self.path)
        # isolation_level=None: no implicit transactions; writes below open
        # their own, so a lone SELECT never holds a read snapshot open.
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            # The CLI and the proxy may share the file; wait rather than fail.
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._conn.executescript(_SCHEMA)
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- UsageStore --------------------------------------------------------

    def write_events(self, events: Sequence[UsageEvent]) -> None:
        if not events:
            return
        params = [_event_params(event) for event in events]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(_INSERT_EVENT, params)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def get_event(self, request_id: str) -> UsageEvent | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {', '.join(_EVENT_COLUMNS)} FROM usage_events WHERE request_id = ?",
                (request_id,),
            ).fetchone()
        if row is None:
            return None
        values = dict(zip(_EVENT_COLUMNS, row, strict=True))
        del values["day"]
        values["timestamp"] = values.pop("ts")
        values["priced"] = bool(values["priced"])
        values["estimated"] = bool(values["estimated"])
        return UsageEvent(**values)

    def usage_summary(self, since: float, until: float | None, by: Sequence[str]) -> list[UsageRow]:
        groups = normalize_group_by(by)
        # Column names come from the validated `groups`, never from the caller.
        columns = ", ".join(groups)
        where, params = "ts >= ?", [since]
        if until is not None:
            where += " AND ts < ?"
            params.append(until)
        sql = f"SELECT {columns + ',' if groups else ''} {_SUMS} FROM usage_events WHERE {where}"
        if groups:
            sql += f" GROUP BY {columns} ORDER BY {columns}"
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        summary = []
        for row in rows:
            keys, sums = row[: len(groups)], row[len(groups):]
            if sums[0] == 0:  # an aggregate without GROUP BY yields one row even when empty
                continue
            summary.append(
                UsageRow(
                    **dict(zip(groups, keys, strict=True)),
                    requests=sums[0],
                    input_tokens=sums[1],
                    output_tokens=sums[2],
                    cache_read_tokens=sums[3],
                    cache_write_tokens=sums[4],
                    cost_micro_usd=sums[5],
                    estimated_requests=sums[6],
                    unpriced_requests=sums[7],
                )
            )
        return summary

    # -- KeyStore ----------------------------------------------------------

    def create_key(self, org: str, app: str) -> IssuedKey:
        if not org or not app:
            raise ValueError("a key needs a non-empty org and app")
        created_at = self._clock()
        secret = generate_secret()
        with self._lock:
            # A collision in 36**16 ids is next to impossible; retry rather than fail.
            for _ in range(5):
                access_key_id = generate_access_key_id()
                cursor = self._conn.execute(
                    f"INSERT OR IGNORE INTO api_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL)",
                    (access_key_id, org, app, secret, created_at),
                )
                if cursor.rowcount == 1:
                    return IssuedKey(access_key_id, secret, org, app, created_at)
        raise RuntimeError("could not generate a unique access key id")

    def get_key(self, access_key_id: str) -> KeyRecord | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE access_key_id = ?", (access_key_id,)
            ).fetchone()
        return None if row is None else KeyRecord(*row)

    def list_keys(self) -> list[KeyRecord]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, access_key_id"
            ).fetchall()
        return [KeyRecord(*row) for row in rows]

    def revoke_key(self, access_key_id: str) -> bool:
        with self._lock:
            cursor = self._conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE access_key_id = ? AND revoked_at IS NULL",
                (self._clock(), access_key_id),
            )
        return cursor.rowcount == 1
