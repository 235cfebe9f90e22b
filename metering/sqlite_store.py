"""The embedded store: usage, quotas and issued keys in one SQLite file.

One connection behind a `threading.Lock`; every public method is async and
runs its SQL in `asyncio.to_thread`, so the proxy's loop never waits on the
file. SQLite serializes writers anyway, and one connection keeps the cost of a
write to a lock and a WAL append. WAL lets the `costkeeper usage` CLI read while
the proxy writes; `synchronous=NORMAL` in WAL mode can lose the last
transactions on power loss but never corrupts the file
(https://www.sqlite.org/pragma.html#pragma_synchronous) — and the metering
journal still holds whatever such a transaction carried.

Unlike DynamoDB, SQLite keeps one row per request (`usage_events`), which
makes reports exact to the second and lets `get_event` answer; per-minute model
rates, committed quota spend and budget leases (`metering/sqlite_leases.py`) live in
their own tables, written in the same transaction as the events and the batch marker.
The ids of reported usage are claimed in `metering/sqlite_reports.py`. A batch applies once
per id and an event once per request id (first write wins). Money is integer pico-USD;
a file written in micro-USD is converted once on open (`metering/sqlite_units.py`).
A sum of costs is taken in two parts (whole micro-USD and the rest) so that no
SQL SUM overflows 64 bits however long the window: only a single row is bound by
$9.2M (`metering/money.py`).

Issued secrets (the rows of `metering/sqlite_keys.py`) are stored encrypted
(`metering/secret_box.py`); the key is by default a file beside the database,
`<path>.key`, created on first use, so a copy of the database alone reveals no
secret. The file is still created with
mode 0600 (it holds who spends what); SQLite gives its `-wal` and `-shm` files
the database file's permissions. `secure_delete` zeroes freed content, so a
secret re-encrypted by `costkeeper keys encrypt` leaves no plaintext behind in
free pages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields, replace
from datetime import UTC, datetime
from operator import attrgetter
from types import TracebackType
from typing import Any

from metering.aggregate import Aggregate, regroup_by_base_model, stored_groups
from metering.events import UsageEvent, utc_day
from metering.money import PICO_PER_MICRO
from metering.secret_box import SecretBox, generate_key
from metering.secret_keys import KeyFile, KeySource, StaticKeys
from metering.sqlite_invocations import INVOCATIONS_SCHEMA, InvocationRows
from metering.sqlite_keys import KeyRows
from metering.sqlite_leases import (
    ADD_COMMITTED,
    LEASES_SCHEMA,
    SETTLE,
    LeaseRows,
    add_missing_lease_columns,
)
from metering.sqlite_overrides import OVERRIDES_SCHEMA, OverrideRows
from metering.sqlite_reports import REPORTS_SCHEMA, ReportClaims
from metering.sqlite_rows import insert_rows
from metering.sqlite_tags import TAG_JOIN, TAG_VALUE, TAGS_SCHEMA, event_tags, store_tags
from metering.sqlite_units import convert_to_pico_usd
from metering.store import (
    ModelRate,
    UsageRow,
    events_batch_id,
    normalize_group_by,
    parse_scope,
)
from metering.store_stats import StoreStats
from metering.tags import TAG_PREFIX, tag_key_of

__all__ = ["COUNTED_SQL", "SQLiteStore"]

logger = logging.getLogger(__name__)

#: UsageEvent field type → column declaration. Columns follow the dataclass, so
#: a new event field becomes a new column (added to existing files on open).
_SQL_TYPES = {
    "str": "TEXT NOT NULL",
    "int": "INTEGER NOT NULL",
    "float": "REAL NOT NULL",
    "bool": "INTEGER NOT NULL",
    "float | None": "REAL",
    "int | None": "INTEGER",
    "str | None": "TEXT",
}
#: `tags` live in their own table (metering/sqlite_tags.py).
_EVENT_FIELDS = tuple(f for f in fields(UsageEvent) if f.name != "tags")
#: `timestamp` is stored as `ts`; `day` (derived at write time) is indexed.
_EVENT_COLUMNS = ("day", *("ts" if f.name == "timestamp" else f.name for f in _EVENT_FIELDS))
_BOOL_FIELDS = frozenset(f.name for f in _EVENT_FIELDS if f.type == "bool")


def _column(f: Any) -> str:
    name = "ts" if f.name == "timestamp" else f.name
    declaration = f"{name} {_SQL_TYPES[str(f.type)]}"
    if f.name == "request_id":
        return f"{declaration} PRIMARY KEY"
    if f.default is not MISSING and f.default is not None:  # older files get it on ALTER TABLE
        default = f.default
        literal = f"'{default}'" if isinstance(default, str) else repr(int(default) if isinstance(default, bool) else default)
        declaration += f" DEFAULT {literal}"
    return declaration


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS usage_events (
    day TEXT NOT NULL,
    {", ".join(_column(f) for f in _EVENT_FIELDS)}
);
-- Reports: a time range, then grouping.
CREATE INDEX IF NOT EXISTS usage_events_ts ON usage_events (ts);
-- Scope totals: one day's usage per org (or org and app) and model.
CREATE INDEX IF NOT EXISTS usage_events_day_scope ON usage_events (day, org, app, model);
-- One row per applied batch: a replayed batch is recognized and skipped.
CREATE TABLE IF NOT EXISTS applied_batches (
    batch_id   TEXT PRIMARY KEY,
    applied_at REAL NOT NULL
);
-- Tokens and requests per model and UTC minute (`slot` = 'YYYY-MM-DD#HH:MM').
CREATE TABLE IF NOT EXISTS model_rates (
    model TEXT NOT NULL,
    slot  TEXT NOT NULL,
    tpm   INTEGER NOT NULL,
    rpm   INTEGER NOT NULL,
    PRIMARY KEY (model, slot)
);
-- `secret`: `v1:<key id>:<base64>` (AES-256-GCM), or the bare secret in rows
-- written before encryption existed (`costkeeper keys encrypt` converts them).
CREATE TABLE IF NOT EXISTS api_keys (
    access_key_id TEXT PRIMARY KEY,
    org           TEXT NOT NULL,
    app           TEXT NOT NULL,
    secret        TEXT NOT NULL,
    created_at    REAL NOT NULL,
    revoked_at    REAL
);
-- The key-check marker and, with KMS, the wrapped data key (`metering/secret_keys.py`).
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_INSERT_EVENT = f"INSERT OR IGNORE INTO usage_events ({', '.join(_EVENT_COLUMNS)})"
_EVENT_ROW = f"({', '.join('?' * len(_EVENT_COLUMNS))})"
#: Request ids per duplicate check: far below SQLite's bound-parameter limit (999 before 3.32).
_IDS_PER_QUERY = 500
#: (head, one row's placeholders, tail): `metering/sqlite_rows.py` makes the statements.
_ADD_RATE = ("INSERT INTO model_rates (model, slot, tpm, rpm)", "(?, ?, ?, ?)",
             "ON CONFLICT (model, slot) DO UPDATE SET tpm = tpm + excluded.tpm, rpm = rpm + excluded.rpm")
# SUM of a 64-bit column raises on overflow: the cost is summed as whole micro-USD
# and the rest (integer division and remainder), exact far beyond 2^63 pico-USD.
_SUMS = f"""
    COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens),
    SUM(cache_write_tokens), SUM(cost_pico_usd / {PICO_PER_MICRO}), SUM(cost_pico_usd % {PICO_PER_MICRO}),
    SUM(estimated), SUM(1 - priced)
"""
#: Rows that count as usage: not a request Bedrock refused (`UsageEvent.refused`: a 4xx
#: that billed nothing). Those stay stored as the errors they were, out of every sum.
COUNTED_SQL = ("NOT (status BETWEEN 400 AND 499 AND input_tokens = 0 AND output_tokens = 0 "
               "AND cache_read_tokens = 0 AND cache_write_tokens = 0)")
_MEMORY = ":memory:"


def _create_private(path: str) -> None:
    """Create `path` with mode 0600 unless it exists (O_EXCL: no race with a creator)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            logger.warning("%s holds usage and issued keys but has mode %03o; consider chmod 600", path, mode)
        return
    os.close(fd)


#: An event's field values in column order (sqlite3 stores a bool as the integer it is).
_event_values = attrgetter(*(f.name for f in _EVENT_FIELDS))


def _event_rows(events: Sequence[UsageEvent]) -> list[tuple[object, ...]]:
    """Each event's column values (`day` first). The day is worked out once per minute of
    timestamps, not once per event: a batch's events share a few minutes (issue #20)."""
    rows = []
    minute, day = None, ""
    for event in events:
        if event.timestamp // 60 != minute:
            minute, day = event.timestamp // 60, utc_day(event.timestamp)
        rows.append((day, *_event_values(event)))
    return rows


def _row_to_event(row: Sequence[Any]) -> UsageEvent:
    values = dict(zip(_EVENT_COLUMNS, row, strict=True))
    del values["day"]
    values["timestamp"] = values.pop("ts")
    for name in _BOOL_FIELDS:
        values[name] = bool(values[name])
    return UsageEvent(**values)


def _usage_row(groups: dict[str, Any], sums: Sequence[int]) -> UsageRow:
    return UsageRow(
        **groups,
        requests=sums[0],
        input_tokens=sums[1],
        output_tokens=sums[2],
        cache_read_tokens=sums[3],
        cache_write_tokens=sums[4],
        cost_pico_usd=sums[5] * PICO_PER_MICRO + sums[6],
        estimated_requests=sums[7],
        unpriced_requests=sums[8],
    )


def _slot(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d#%H:%M")


class SQLiteStore(KeyRows, InvocationRows, OverrideRows, ReportClaims, LeaseRows):
    """`UsageStore`, `LeaseStore`, `KeyStore` and `InvocationStore` in one SQLite file (or `":memory:"`).

    `key_source` gives the key for issued secrets; None → the key file
    `<path>.key`, created on first use (a fresh key per `":memory:"` store).
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time,
                 key_source: KeySource | None = None, max_tag_values: int = 100) -> None:
        self.path = os.fspath(path)
        #: Distinct values kept per (org, tag key, day); more count as `other` (metering/tags.py).
        self.max_tag_values = max_tag_values
        self._in_memory = self.path == _MEMORY
        self._clock = clock
        self._lock = threading.Lock()
        self.stats = StoreStats()
        #: Rows the running transaction changed and a savepoint undid (`_insert_fresh`).
        self._undone = 0
        if key_source is None:
            key_source = (StaticKeys(generate_key(), name="an in-memory store's key") if self.path == _MEMORY
                          else KeyFile(f"{self.path}.key", create=True))
        self._key_source: KeySource | None = key_source
        self._box: SecretBox | None = None
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
            # Freed content is zeroed: no secret survives its re-encryption in a free page.
            self._conn.execute("PRAGMA secure_delete=ON")
            self._conn.executescript(_SCHEMA)
            self._conn.executescript(LEASES_SCHEMA)
            #: What opening converted from micro-USD, if anything (`store init` reports it).
            #: Before any table is created: a creation waits only the usual 5 s for a
            #: file another process is converting, the conversion itself waits longer.
            self.converted = convert_to_pico_usd(self._conn)
            self._conn.executescript(INVOCATIONS_SCHEMA)
            self._conn.executescript(OVERRIDES_SCHEMA)
            self._conn.executescript(TAGS_SCHEMA)
            self._conn.executescript(REPORTS_SCHEMA)
            self._add_missing_columns()
        except BaseException:
            self._conn.close()
            raise

    def _add_missing_columns(self) -> None:
        """Files written by an older version lack the newer event fields' columns."""
        present = {row[1] for row in self._conn.execute("PRAGMA table_info(usage_events)")}
        for f in _EVENT_FIELDS:
            name = "ts" if f.name == "timestamp" else f.name
            if name not in present:
                self._conn.execute(f"ALTER TABLE usage_events ADD COLUMN {_column(f)}")
        add_missing_lease_columns(self._conn)

    async def open(self) -> None:
        """Nothing to do: the file is opened by the constructor."""

    async def init(self) -> str:
        """`costkeeper store init`: the constructor already created (or converted) the tables."""
        return f"SQLite store ready at {self.path}" + (f" ({self.converted})" if self.converted else "")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> SQLiteStore:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(self._locked, function, *args)

    def _locked(self, function: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            return function(*args)

    def _transaction(self, function: Callable[..., Any], *args: Any) -> Any:
        changes = self._conn.total_changes
        self._undone = 0
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            result = function(*args)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        self.stats.on_transaction(self._conn.total_changes - changes - self._undone)
        return result

    # -- UsageStore --------------------------------------------------------

    async def write_batch(self, batch_id: str, events: Sequence[UsageEvent]) -> bool:
        return bool(await self._run(self._transaction, self._apply_batch, batch_id, list(events)))

    async def write_events(self, events: Sequence[UsageEvent]) -> None:
        if events:
            await self.write_batch(events_batch_id(events), events)

    def _apply_batch(self, batch_id: str, events: list[UsageEvent]) -> bool:
        cursor = self._conn.execute(
            "INSERT OR IGNORE INTO applied_batches (batch_id, applied_at) VALUES (?, ?)", (batch_id, self._clock())
        )
        if cursor.rowcount == 0:
            return False
        fresh = self._insert_fresh(events)
        store_tags(self._conn, fresh, self.max_tag_values)
        counted = Aggregate(fresh, rows=False)  # the rows are the events themselves
        insert_rows(self._conn, [
            (model, f"{day}#{minute}", rate.tokens, rate.requests)
            for (day, minute, model), rate in sorted(counted.rates.items())
        ], *_ADD_RATE)
        insert_rows(self._conn, [
            (scope, day, model, delta) for (scope, day, model), delta in sorted(counted.committed.items())
        ], *ADD_COMMITTED)
        insert_rows(self._conn, [
            (scope, day, model, holder, -reserved)
            for (scope, day, model, holder), reserved in sorted(counted.settled.items()) if reserved
        ], *SETTLE)
        return True

    def _insert_fresh(self, events: list[UsageEvent]) -> list[UsageEvent]:
        """Insert the rows of `events` whose request id is not stored yet (the first of
        each id only); those events. Only events stored now count: a request id seen
        before (in an earlier batch, or earlier in this one) was counted then.

        Multi-row INSERTs rather than a statement step per row: a busy event loop would
        otherwise make the flush wait for the GIL once per row (metering/sqlite_rows.py).
        The usual batch repeats no id: it is inserted whole at once, and if every row went
        in, that was all. Otherwise it is undone (a savepoint) and the stored ids are
        looked up first — a SELECT of every id that cost the usual batch ≈ 2 µs an event
        (issue #20)."""
        rows = _event_rows(events)
        self._conn.execute("SAVEPOINT fresh")
        changes = self._conn.total_changes
        insert_rows(self._conn, rows, _INSERT_EVENT, _EVENT_ROW)
        inserted = self._conn.total_changes - changes
        if inserted == len(events):
            self._conn.execute("RELEASE fresh")
            return events
        self._conn.execute("ROLLBACK TO fresh")
        self._undone += inserted  # not changes of the transaction (`total_changes` still counts them)
        self._conn.execute("RELEASE fresh")
        fresh = self._unseen(events)
        insert_rows(self._conn, _event_rows(fresh), _INSERT_EVENT, _EVENT_ROW)
        return fresh

    def _unseen(self, events: list[UsageEvent]) -> list[UsageEvent]:
        """`events` whose request id is not stored yet, the first of each id only."""
        seen: set[str] = set()
        ids = list(dict.fromkeys(event.request_id for event in events))
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start:start + _IDS_PER_QUERY]
            seen.update(row[0] for row in self._conn.execute(
                f"SELECT request_id FROM usage_events WHERE request_id IN ({', '.join('?' * len(chunk))})", chunk))
        fresh = []
        for event in events:
            if event.request_id not in seen:
                seen.add(event.request_id)
                fresh.append(event)
        return fresh

    async def get_event(self, request_id: str) -> UsageEvent | None:
        def read() -> UsageEvent | None:
            row = self._conn.execute(
                f"SELECT {', '.join(_EVENT_COLUMNS)} FROM usage_events WHERE request_id = ?", (request_id,)
            ).fetchone()
            return None if row is None else replace(_row_to_event(row), tags=event_tags(self._conn, request_id))

        event: UsageEvent | None = await self._run(read)
        return event

    async def usage_summary(self, since: float, until: float | None, by: Sequence[str]) -> list[UsageRow]:
        wanted = normalize_group_by(by)
        groups = stored_groups(wanted)
        tag = tag_key_of(groups)
        tag_group = f"{TAG_PREFIX}{tag}"
        # Column names come from the validated `groups`, never from the caller; the tag
        # key is a bound parameter. A missing tag value (NULL) sorts last.
        selected = [TAG_VALUE if name == tag_group else name for name in groups]
        columns = ", ".join(selected)
        order = ", ".join(f"{column} IS NULL, {column}" for column in selected)
        params: list[str | float] = [] if tag is None else [tag]
        source = "usage_events" if tag is None else "usage_events" + TAG_JOIN
        where = f"ts >= ? AND {COUNTED_SQL}"
        params.append(since)
        if until is not None:
            where += " AND ts < ?"
            params.append(until)
        sql = f"SELECT {columns + ',' if groups else ''} {_SUMS} FROM {source} WHERE {where}"
        if groups:
            sql += f" GROUP BY {columns} ORDER BY {order}"
        rows = await self._run(lambda: self._conn.execute(sql, params).fetchall())
        summary = []
        for row in rows:
            keys, sums = row[: len(groups)], row[len(groups):]
            if sums[0] == 0:  # an aggregate without GROUP BY yields one row even when empty
                continue
            summary.append(_usage_row({("tag" if name == tag_group else name): key
                                       for name, key in zip(groups, keys, strict=True)}, sums))
        return regroup_by_base_model(summary, wanted)

    async def model_rates(self, model: str, since: float, until: float) -> list[ModelRate]:
        first, end = _slot(since), _slot(until)
        rows = await self._run(lambda: self._conn.execute(
            "SELECT slot, tpm, rpm FROM model_rates WHERE model = ? AND slot >= ? AND slot < ? ORDER BY slot",
            (model, first, end),
        ).fetchall())
        rates = []
        for slot, tpm, rpm in rows:
            day, _, minute = slot.partition("#")
            rates.append(ModelRate(model=model, day=day, minute=minute, tpm=tpm, rpm=rpm))
        return rates

    async def scope_totals(self, scope: str, day: str) -> dict[str, UsageRow]:
        org, app = parse_scope(scope)
        where, params = f"day = ? AND org = ? AND {COUNTED_SQL}", [day, org]
        if app is not None:
            where += " AND app = ?"
            params.append(app)
        sql = f"SELECT model, {_SUMS} FROM usage_events WHERE {where} GROUP BY model ORDER BY model"
        rows = await self._run(lambda: self._conn.execute(sql, params).fetchall())
        return {row[0]: _usage_row({"model": row[0], "day": day}, row[1:]) for row in rows}
