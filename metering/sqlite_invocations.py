"""Async-invocation owners as SQLite rows (table `async_invocations`, metering/invocations.py).

A mixin of `SQLiteStore`: it needs the store's connection (`_conn`) and its `_run`
(one thread at a time); the store creates the table with the rest of its schema.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from metering.invocations import Invocation

__all__ = ["INVOCATIONS_SCHEMA", "InvocationRows"]

INVOCATIONS_SCHEMA = """
-- Who started which async invocation (StartAsyncInvoke): Get and List answer owners only.
CREATE TABLE IF NOT EXISTS async_invocations (
    invocation_arn TEXT PRIMARY KEY,
    org            TEXT NOT NULL,
    app            TEXT NOT NULL,
    model          TEXT NOT NULL,
    started_at     REAL NOT NULL
);
"""
_COLUMNS = "invocation_arn, org, app, model, started_at"
#: ARNs per query: far below SQLite's bound-parameter limit (999 before 3.32).
_ARNS_PER_QUERY = 500


class InvocationRows:
    # Provided by SQLiteStore:
    _conn: sqlite3.Connection
    _run: Callable[..., Awaitable[Any]]

    async def record_invocation(self, invocation: Invocation) -> tuple[Invocation, bool]:
        def record() -> tuple[Invocation, bool]:
            cursor = self._conn.execute(
                f"INSERT OR IGNORE INTO async_invocations ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                (invocation.arn, invocation.org, invocation.app, invocation.model, invocation.started_at),
            )
            if cursor.rowcount == 1:
                return invocation, True
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM async_invocations WHERE invocation_arn = ?", (invocation.arn,)
            ).fetchone()
            return Invocation(*row), False

        result: tuple[Invocation, bool] = await self._run(record)
        return result

    async def invocations(self, arns: Sequence[str]) -> dict[str, Invocation]:
        wanted = list(dict.fromkeys(arns))

        def select() -> dict[str, Invocation]:
            found: dict[str, Invocation] = {}
            for start in range(0, len(wanted), _ARNS_PER_QUERY):
                chunk = wanted[start:start + _ARNS_PER_QUERY]
                for row in self._conn.execute(
                    f"SELECT {_COLUMNS} FROM async_invocations WHERE invocation_arn IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ):
                    found[row[0]] = Invocation(*row)
            return found

        if not wanted:
            return {}
        result: dict[str, Invocation] = await self._run(select)
        return result
