"""Cost attribution tags in the SQLite store (metering/tags.py has the rules).

`usage_event_tags` holds each stored request's tags beside its `usage_events` row,
with the value as counted: `other` once its (org, key, day) already holds
`max_tag_values` distinct values, which `tag_values` lists. Both are written in the
batch's transaction, so a value takes a slot only if its request is stored, and a
replayed batch (skipped whole) takes none.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from metering.events import UsageEvent
from metering.sqlite_rows import insert_rows
from metering.tags import OTHER, Tags, make_tags

__all__ = ["TAG_JOIN", "TAG_VALUE", "TAGS_SCHEMA", "event_tags", "store_tags"]

TAGS_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_event_tags (
    request_id TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (request_id, key)
);
-- The distinct values kept per org, tag key and UTC day (at most max_tag_values).
CREATE TABLE IF NOT EXISTS tag_values (
    org   TEXT NOT NULL,
    key   TEXT NOT NULL,
    day   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (org, key, day, value)
);
"""

#: Grouping by a tag: each usage row with its value of the tag (`TAG_VALUE`, NULL
#: without it). The tag key is the join's one parameter, bound before the WHERE clause's.
TAG_JOIN = " LEFT JOIN usage_event_tags t ON t.request_id = usage_events.request_id AND t.key = ?"
TAG_VALUE = "t.value"


def store_tags(conn: sqlite3.Connection, events: Sequence[UsageEvent], max_values: int) -> None:
    """Store the tags of `events` (just inserted, in this transaction), each value kept
    if its (org, key, day) has a slot for it, else as `other`."""
    rows = [(event.request_id, key, _kept(conn, event.org, key, event.day, value, max_values))
            for event in events for key, value in event.tags]
    insert_rows(conn, rows, "INSERT OR IGNORE INTO usage_event_tags (request_id, key, value)", "(?, ?, ?)")


def _kept(conn: sqlite3.Connection, org: str, key: str, day: str, value: str, max_values: int) -> str:
    if value == OTHER:
        return value
    scope = (org, key, day)
    if conn.execute("SELECT 1 FROM tag_values WHERE org = ? AND key = ? AND day = ? AND value = ?",
                    (*scope, value)).fetchone():
        return value
    (count,) = conn.execute("SELECT COUNT(*) FROM tag_values WHERE org = ? AND key = ? AND day = ?",
                            scope).fetchone()
    if count >= max_values:
        return OTHER
    conn.execute("INSERT INTO tag_values (org, key, day, value) VALUES (?, ?, ?, ?)", (*scope, value))
    return value


def event_tags(conn: sqlite3.Connection, request_id: str) -> Tags:
    """The stored tags of one request (values as counted)."""
    return make_tags(conn.execute("SELECT key, value FROM usage_event_tags WHERE request_id = ?",
                                  (request_id,)).fetchall())
