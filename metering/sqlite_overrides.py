"""Runtime quota overrides as SQLite rows (table `quota_overrides`; metering/overrides.py).

A mixin of `SQLiteStore`: it needs the store's connection (`_conn`), its `_run`
(one thread at a time) and `_transaction`. `app` and `day` are "" when unset, so
the primary key covers every override.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from metering.overrides import QuotaOverride

__all__ = ["OverrideRows", "OVERRIDES_SCHEMA"]

OVERRIDES_SCHEMA = """
CREATE TABLE IF NOT EXISTS quota_overrides (
    org            TEXT NOT NULL,
    app            TEXT NOT NULL,
    model          TEXT NOT NULL,
    day            TEXT NOT NULL,
    quota_pico_usd INTEGER NOT NULL,
    set_by         TEXT NOT NULL,
    set_at         REAL NOT NULL,
    PRIMARY KEY (org, app, model, day)
);
"""
_COLUMNS = "org, app, model, day, quota_pico_usd, set_by, set_at"
_WHERE = "org = ? AND app = ? AND model = ? AND day = ?"


class OverrideRows:
    # Provided by SQLiteStore:
    _conn: sqlite3.Connection
    _run: Callable[..., Awaitable[Any]]
    _transaction: Callable[..., Any]

    async def quota_overrides(self) -> list[QuotaOverride]:
        rows = await self._run(lambda: self._conn.execute(
            f"SELECT {_COLUMNS} FROM quota_overrides ORDER BY org, app, model, day").fetchall())
        return [QuotaOverride(*row) for row in rows]

    async def put_quota_override(self, override: QuotaOverride) -> QuotaOverride | None:
        def put() -> QuotaOverride | None:
            old = self._conn.execute(f"SELECT {_COLUMNS} FROM quota_overrides WHERE {_WHERE}",
                                     override.key).fetchone()
            self._conn.execute(f"INSERT OR REPLACE INTO quota_overrides ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                               (*override.key, override.quota_pico_usd, override.set_by, override.set_at))
            return None if old is None else QuotaOverride(*old)

        result: QuotaOverride | None = await self._run(self._transaction, put)
        return result

    async def delete_quota_override(self, org: str, app: str, model: str, day: str) -> QuotaOverride | None:
        def delete() -> QuotaOverride | None:
            old = self._conn.execute(f"SELECT {_COLUMNS} FROM quota_overrides WHERE {_WHERE}",
                                     (org, app, model, day)).fetchone()
            self._conn.execute(f"DELETE FROM quota_overrides WHERE {_WHERE}", (org, app, model, day))
            return None if old is None else QuotaOverride(*old)

        result: QuotaOverride | None = await self._run(self._transaction, delete)
        return result

    async def clear_exhausted(self, scope: str, day: str, model: str) -> None:
        def clear() -> None:
            self._conn.execute("DELETE FROM quota_exhausted WHERE scope = ? AND day = ? AND model = ?",
                               (scope, day, model))

        await self._run(self._transaction, clear)
