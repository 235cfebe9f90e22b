"""Claims on the request ids of client-reported usage in SQLite (`POST /v1/usage-reports`, issue #23).

A report is recorded only by whoever claims its id first. Looking the id up in
`usage_events` does not decide that: the event reaches the file with the next
flush of its proxy's journal, so two processes on one file (two proxies, or one
restarting while the old one drains) would both find nothing, both answer
"recorded", and each settle the cost against its own budget lease — the second
settlement is dropped with its duplicate row, and its lease keeps the cost as
spend until it expires. The claim is a row of `report_claims`, inserted with
`INSERT OR IGNORE` in a write transaction: SQLite lets one writer at a time at
the file, so of any number of processes and store instances exactly one inserts
it (as DynamoDB's conditional put does, `metering/dynamodb_reports.py`).

A claim lives `CLAIM_TTL_SECONDS` and is deleted by a later claim after that: long
before, its event is in `usage_events`, which answers for the id from then on
(and for reports recorded before this table existed).

A mixin of `SQLiteStore`: it needs the store's connection (`_conn`), its `_run`
(one thread at a time), `_transaction` and `_clock`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["CLAIM_TTL_SECONDS", "REPORTS_SCHEMA", "ReportClaims"]

#: As long as DynamoDB keeps its claims and batch markers by default (`store.marker_ttl_days`):
#: the longest a journal may wait to be stored, so the claimed event is stored by then.
CLAIM_TTL_SECONDS = 30 * 86_400

REPORTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS report_claims (
    report_id  TEXT PRIMARY KEY,
    claimed_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS report_claims_expiry ON report_claims (expires_at);
"""


class ReportClaims:
    # Provided by SQLiteStore:
    _conn: sqlite3.Connection
    _run: Callable[..., Awaitable[Any]]
    _transaction: Callable[..., Any]
    _clock: Callable[[], float]

    async def claim_report(self, report_id: str) -> bool:
        """True when `report_id` was neither claimed (unexpired) nor stored before (now it
        is claimed), False for a duplicate. Atomic across every process on the file."""
        def claim() -> bool:
            now = self._clock()
            self._conn.execute("DELETE FROM report_claims WHERE expires_at <= ?", (now,))
            if self._conn.execute("SELECT 1 FROM usage_events WHERE request_id = ?", (report_id,)).fetchone():
                return False
            return self._conn.execute(
                "INSERT OR IGNORE INTO report_claims (report_id, claimed_at, expires_at) VALUES (?, ?, ?)",
                (report_id, now, now + CLAIM_TTL_SECONDS)).rowcount == 1

        return bool(await self._run(self._transaction, claim))
