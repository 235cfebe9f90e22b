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
#: Values per lookup of those already kept: far below SQLite's bound-parameter limit (999 before 3.32).
_VALUES_PER_QUERY = 500


def store_tags(conn: sqlite3.Connection, events: Sequence[UsageEvent], max_values: int) -> None:
    """Store the tags of `events` (just inserted, in this transaction), each value kept
    if its (org, key, day) has a slot for it, else as `other`, in the events' order.

    Two SELECTs per (org, key, day) of the batch and multi-row INSERTs, not up to three
    statements per tag: Python's sqlite3 takes the GIL back at every statement, and a
    flush of tagged events waited for it that many times behind a busy event loop
    (metering/sqlite_rows.py, issue #20). The batch's transaction holds the write lock,
    so what the SELECTs read stays true until the INSERTs."""
    scopes: dict[tuple[str, str, str], dict[str, None]] = {}  # scope → its values in this batch, in order
    tagged: list[tuple[str, str, tuple[str, str, str], str]] = []
    for event in events:
        if event.tags:
            day = event.day
            for key, value in event.tags:
                scope = (event.org, key, day)
                scopes.setdefault(scope, {})[value] = None
                tagged.append((event.request_id, key, scope, value))
    if not tagged:
        return
    new_values: list[tuple[str, str, str, str]] = []
    kept: dict[tuple[str, str, str], tuple[set[str], int]] = {}  # scope → (values kept, how many)
    for scope, values in scopes.items():
        asked = [value for value in values if value != OTHER]
        known: set[str] = set()
        for start in range(0, len(asked), _VALUES_PER_QUERY):
            chunk = asked[start:start + _VALUES_PER_QUERY]
            known.update(row[0] for row in conn.execute(
                "SELECT value FROM tag_values WHERE org = ? AND key = ? AND day = ? "
                f"AND value IN ({', '.join('?' * len(chunk))})", (*scope, *chunk)))
        (count,) = conn.execute("SELECT COUNT(*) FROM tag_values WHERE org = ? AND key = ? AND day = ?",
                                scope).fetchone()
        kept[scope] = (known, count)
    rows = []
    for request_id, key, scope, value in tagged:
        known, count = kept[scope]
        if value != OTHER and value not in known:
            if count >= max_values:
                value = OTHER
            else:
                known.add(value)
                kept[scope] = (known, count + 1)
                new_values.append((*scope, value))
        rows.append((request_id, key, value))
    insert_rows(conn, new_values, "INSERT INTO tag_values (org, key, day, value)", "(?, ?, ?, ?)")
    insert_rows(conn, rows, "INSERT OR IGNORE INTO usage_event_tags (request_id, key, value)", "(?, ?, ?)")


def event_tags(conn: sqlite3.Connection, request_id: str) -> Tags:
    """The stored tags of one request (values as counted)."""
    return make_tags(conn.execute("SELECT key, value FROM usage_event_tags WHERE request_id = ?",
                                  (request_id,)).fetchall())
