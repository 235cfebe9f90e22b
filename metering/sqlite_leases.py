"""Budget leases in SQLite: the `LeaseStore` side of `metering/budget.py`.

Per (quota scope, UTC day, model) one row of `quota_committed` (spent + leased,
pico-USD), one row of `quota_leases` per holder (a proxy process) with its amount
and expiry, and the sticky `quota_exhausted` marks. A claim, renewal or reclaim
is one transaction (BEGIN IMMEDIATE): it reads and changes `committed` with no other
writer in between, whichever process on the file makes it. A flush moves what its events
settle from the leases to spent in its own transaction (`ADD_COMMITTED`, `SETTLE`,
used by `SQLiteStore._apply_batch`).

A mixin of `SQLiteStore`: it needs the store's connection (`_conn`), its `_run`
(one thread at a time) and `_transaction`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from metering.budget import LeaseRecord, ModelBudget, ScopeBudget
from metering.sqlite_rows import statement

__all__ = ["ADD_COMMITTED", "LEASES_SCHEMA", "SETTLE", "LeaseRows", "add_missing_lease_columns"]

LEASES_SCHEMA = """
-- Spent + outstanding budget leases per quota scope, UTC day and model (metering/budget.py).
CREATE TABLE IF NOT EXISTS quota_committed (
    scope     TEXT NOT NULL,
    day       TEXT NOT NULL,
    model     TEXT NOT NULL,
    committed_pico_usd INTEGER NOT NULL,
    PRIMARY KEY (scope, day, model)
);
-- Budget leases: what each holder (a proxy process) holds of a quota; expires_at NULL: an orphan.
CREATE TABLE IF NOT EXISTS quota_leases (
    scope      TEXT NOT NULL,
    day        TEXT NOT NULL,
    model      TEXT NOT NULL,
    holder     TEXT NOT NULL,
    amount     INTEGER NOT NULL,
    expires_at REAL,
    PRIMARY KEY (scope, day, model, holder)
);
-- Sticky fallback state: models exhausted for a scope until the day ends, and
-- since when (NULL in rows written before the time was kept).
CREATE TABLE IF NOT EXISTS quota_exhausted (
    scope TEXT NOT NULL,
    day   TEXT NOT NULL,
    model TEXT NOT NULL,
    marked_at REAL,
    PRIMARY KEY (scope, day, model)
);
"""

#: (head, one row's placeholders, tail): `metering/sqlite_rows.py` makes the statements.
ADD_COMMITTED = ("INSERT INTO quota_committed (scope, day, model, committed_pico_usd)", "(?, ?, ?, ?)",
                 "ON CONFLICT (scope, day, model) DO UPDATE "
                 "SET committed_pico_usd = committed_pico_usd + excluded.committed_pico_usd")
SETTLE = ("INSERT INTO quota_leases (scope, day, model, holder, amount, expires_at)", "(?, ?, ?, ?, ?, NULL)",
          "ON CONFLICT (scope, day, model, holder) DO UPDATE SET amount = amount + excluded.amount")


def add_missing_lease_columns(conn: sqlite3.Connection) -> None:
    """Files written before the time of an exhausted mark was kept lack `marked_at`."""
    if "marked_at" not in {row[1] for row in conn.execute("PRAGMA table_info(quota_exhausted)")}:
        conn.execute("ALTER TABLE quota_exhausted ADD COLUMN marked_at REAL")


class LeaseRows:
    # Provided by SQLiteStore:
    _conn: sqlite3.Connection
    _run: Callable[..., Awaitable[Any]]
    _transaction: Callable[..., Any]

    def _budget(self, scope: str, day: str) -> ScopeBudget:
        committed = dict(self._conn.execute(
            "SELECT model, committed_pico_usd FROM quota_committed WHERE scope = ? AND day = ?", (scope, day)).fetchall())
        leases: dict[str, dict[str, LeaseRecord]] = {}
        for model, holder, amount, expires_at in self._conn.execute(
                "SELECT model, holder, amount, expires_at FROM quota_leases WHERE scope = ? AND day = ?",
                (scope, day)):
            leases.setdefault(model, {})[holder] = LeaseRecord(amount, expires_at)
        exhausted = frozenset(model for (model,) in self._conn.execute(
            "SELECT model FROM quota_exhausted WHERE scope = ? AND day = ?", (scope, day)))
        return ScopeBudget(
            models={model: ModelBudget(committed.get(model, 0), leases.get(model, {}))
                    for model in committed.keys() | leases.keys()},
            exhausted=exhausted,
        )

    async def read_budget(self, scope: str, day: str) -> ScopeBudget:
        budget: ScopeBudget = await self._run(self._budget, scope, day)
        return budget

    async def claim_lease(self, scope: str, day: str, model: str, holder: str, amount: int, quota: int,
                          expires_at: float) -> tuple[bool, ScopeBudget]:
        def claim() -> tuple[bool, ScopeBudget]:
            row = self._conn.execute(
                "SELECT committed_pico_usd FROM quota_committed WHERE scope = ? AND day = ? AND model = ?",
                (scope, day, model),
            ).fetchone()
            if (row[0] if row else 0) + amount > quota:
                return False, self._budget(scope, day)
            self._conn.execute(statement(*ADD_COMMITTED), (scope, day, model, amount))
            self._conn.execute(
                "INSERT INTO quota_leases (scope, day, model, holder, amount, expires_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (scope, day, model, holder) DO UPDATE SET amount = amount + excluded.amount, "
                "expires_at = excluded.expires_at", (scope, day, model, holder, amount, expires_at))
            return True, self._budget(scope, day)

        result: tuple[bool, ScopeBudget] = await self._run(self._transaction, claim)
        return result

    async def renew_lease(self, scope: str, day: str, model: str, holder: str, give_back: int,
                          expires_at: float | None, *, drop: bool = False) -> bool:
        def renew() -> bool:
            key = (scope, day, model, holder)
            row = self._conn.execute(
                "SELECT amount FROM quota_leases WHERE scope = ? AND day = ? AND model = ? AND holder = ?",
                key).fetchone()
            if row is None:
                return False
            if give_back:
                self._conn.execute(statement(*ADD_COMMITTED), (scope, day, model, -give_back))
            if drop and row[0] == give_back:
                self._conn.execute(
                    "DELETE FROM quota_leases WHERE scope = ? AND day = ? AND model = ? AND holder = ?", key)
                return True
            self._conn.execute(
                "UPDATE quota_leases SET amount = amount - ?, expires_at = COALESCE(?, expires_at) "
                "WHERE scope = ? AND day = ? AND model = ? AND holder = ?", (give_back, expires_at, *key))
            return True

        return bool(await self._run(self._transaction, renew))

    async def reclaim_leases(self, scope: str, day: str, model: str, expired: Mapping[str, LeaseRecord]) -> bool:
        def reclaim() -> bool:
            total = 0
            for holder, lease in expired.items():
                key = (scope, day, model, holder)
                row = self._conn.execute(
                    "SELECT amount, expires_at FROM quota_leases "
                    "WHERE scope = ? AND day = ? AND model = ? AND holder = ?", key).fetchone()
                if row is None or LeaseRecord(*row) != lease:
                    raise _Changed
                self._conn.execute(
                    "DELETE FROM quota_leases WHERE scope = ? AND day = ? AND model = ? AND holder = ?", key)
                total += lease.amount
            if total:
                self._conn.execute(statement(*ADD_COMMITTED), (scope, day, model, -total))
            return True

        try:
            return bool(await self._run(self._transaction, reclaim))
        except _Changed:
            return False

    async def exhausted_models(self, scope: str, day: str) -> frozenset[str]:
        rows = await self._run(lambda: self._conn.execute(
            "SELECT model FROM quota_exhausted WHERE scope = ? AND day = ?", (scope, day)
        ).fetchall())
        return frozenset(model for (model,) in rows)

    async def mark_exhausted(self, scope: str, day: str, model: str) -> None:
        now = time.time()
        await self._run(lambda: self._conn.execute(
            "INSERT OR IGNORE INTO quota_exhausted (scope, day, model, marked_at) VALUES (?, ?, ?, ?)",
            (scope, day, model, now),
        ))

    async def exhaustion_times(self, scope: str, day: str) -> dict[str, float | None]:
        rows = await self._run(lambda: self._conn.execute(
            "SELECT model, marked_at FROM quota_exhausted WHERE scope = ? AND day = ?", (scope, day)
        ).fetchall())
        return dict(rows)


class _Changed(Exception):
    """A lease to reclaim changed since it was read: the transaction is rolled back."""
