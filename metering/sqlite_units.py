"""The one-time conversion of an SQLite store from micro-USD to pico-USD (issue #16).

Files written before issue #16 hold money in micro-USD, in columns that say so or
predate the question: `usage_events.cost_micro_usd`, `usage_events.reserved_micro_usd`
and `quota_committed.committed`. Opening such a file renames them to
`cost_pico_usd`, `reserved_pico_usd` and `committed_pico_usd` and multiplies their
values by 10⁶, all in one transaction: a crash leaves the file as it was and the next
open converts it. The column names are the version marker, so a file is converted
exactly once whichever process opens it first (`costkeeper serve` and each of its
workers, `usage`, `store init`): the others wait for the write lock (BEGIN
IMMEDIATE) as long as a conversion of a large file may take, not the store's usual
5 s, look again, and find nothing left to do.

A version from before issue #16 cannot use a converted file: its inserts name a
column that no longer exists and fail loudly rather than mixing units (keep a copy
of the file to go back).
"""

from __future__ import annotations

import logging
import sqlite3

from metering.money import PICO_PER_MICRO
from metering.store import StoreError

__all__ = ["convert_to_pico_usd"]

logger = logging.getLogger(__name__)

#: (table, column in micro-USD, its pico-USD name)
_RENAMES = (
    ("usage_events", "cost_micro_usd", "cost_pico_usd"),
    ("usage_events", "reserved_micro_usd", "reserved_pico_usd"),
    ("quota_committed", "committed", "committed_pico_usd"),
)
#: Larger micro-USD values would not fit SQLite's 64-bit integers once ×10⁶ ($9.2M).
_MAX_MICRO = (2**63 - 1) // PICO_PER_MICRO
#: How long an open waits for another process's conversion (ms); a million rows take seconds.
_CONVERSION_WAIT_MS = 600_000


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _pending(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    return [(table, old, new) for table, old, new in _RENAMES if old in _columns(conn, table)]


def convert_to_pico_usd(conn: sqlite3.Connection) -> str | None:
    """Convert what `conn`'s file still holds in micro-USD (tables already created);
    a summary of what was converted, or None when nothing was left to convert.
    Raises StoreError, changing nothing, for a value too large to convert."""
    if not _pending(conn):
        return None
    (usual_wait,) = conn.execute("PRAGMA busy_timeout").fetchone()
    conn.execute(f"PRAGMA busy_timeout={_CONVERSION_WAIT_MS}")
    try:
        conn.execute("BEGIN IMMEDIATE")
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(usual_wait)}")
    try:
        converted = []
        for table, old, new in _pending(conn):  # again, under the lock
            if new in _columns(conn, table):
                raise StoreError(f"{table} has both {old} (micro-USD) and {new} (pico-USD); "
                                 "was the file opened by an older version after the upgrade?")
            (too_large,) = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE abs({old}) > ?", (_MAX_MICRO,)).fetchone()
            if too_large:
                raise StoreError(f"{table}.{old}: {too_large} value(s) above {_MAX_MICRO} micro-USD cannot be "
                                 "kept as 64-bit pico-USD")
            conn.execute(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}")
            rows = conn.execute(f"UPDATE {table} SET {new} = {new} * ? WHERE {new} != 0", (PICO_PER_MICRO,)).rowcount
            converted.append(f"{table}.{old} → {new} ({rows} non-zero rows ×10^6)")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if not converted:
        return None
    summary = "converted money from micro-USD to pico-USD: " + "; ".join(converted)
    logger.warning("%s", summary)
    return summary
