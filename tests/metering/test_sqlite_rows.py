"""Many rows in few statements (metering/sqlite_rows.py): the same table as one
statement per row, and a flush whose statement count does not grow with its events
(each statement step hands the GIL back; a per-row step starved the flush thread
behind a busy event loop)."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.sqlite_rows import insert_rows, statement
from metering.sqlite_store import SQLiteStore
from tests.metering.conftest import _make_event

pytestmark = pytest.mark.anyio

_TABLE = "CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER NOT NULL, note TEXT)"
_UPSERT = ("INSERT INTO t (k, n, note)", "(?, ?, NULL)", "ON CONFLICT (k) DO UPDATE SET n = n + excluded.n")
_IGNORE = ("INSERT OR IGNORE INTO t (k, n, note)", "(?, ?, ?)", "")

rows_of = st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(-10**12, 10**12)), max_size=60)


def _table(limit: int | None = None) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute(_TABLE)
    if limit is not None:
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    return conn


@settings(max_examples=200, deadline=None)
@given(rows=rows_of, limit=st.integers(2, 40))
def test_an_upsert_of_many_rows_is_the_upsert_of_each_in_order(rows: list[tuple[str, int]], limit: int) -> None:
    one_by_one, together = _table(), _table(limit)
    for row in rows:
        one_by_one.execute(statement(*_UPSERT), row)
    insert_rows(together, rows, *_UPSERT)
    assert together.execute("SELECT * FROM t ORDER BY k").fetchall() == \
        one_by_one.execute("SELECT * FROM t ORDER BY k").fetchall()


@settings(max_examples=200, deadline=None)
@given(rows=rows_of, limit=st.integers(3, 40))
def test_or_ignore_keeps_the_first_of_each_key_as_row_by_row_does(rows: list[tuple[str, int]], limit: int) -> None:
    one_by_one, together = _table(), _table(limit)
    with_notes = [(key, number, f"{key}{index}") for index, (key, number) in enumerate(rows)]
    one_by_one.executemany("INSERT OR IGNORE INTO t (k, n, note) VALUES (?, ?, ?)", with_notes)
    insert_rows(together, with_notes, *_IGNORE)
    assert together.execute("SELECT * FROM t ORDER BY k").fetchall() == \
        one_by_one.execute("SELECT * FROM t ORDER BY k").fetchall()


async def test_a_flush_runs_a_few_statements_whatever_its_size(sqlite_store: SQLiteStore) -> None:
    """Before: one statement step per event (1,200 for 1,200 events)."""
    statements: list[str] = []
    sqlite_store._conn.set_trace_callback(statements.append)
    events = [_make_event(f"r{index}", cost_pico_usd=1, quota_scope="acme") for index in range(1200)]
    assert await sqlite_store.write_batch("b1", events)
    sqlite_store._conn.set_trace_callback(None)
    assert len(statements) < 20, statements[:30]
    [row] = await sqlite_store.usage_summary(0, None, [])
    assert row.requests == 1200
    assert (await sqlite_store.read_budget("acme", "2025-03-10")).model("amazon.nova-pro-v1:0").spent == 1200


def test_the_statement_shapes_are_few_whatever_the_row_counts() -> None:
    """The connection caches each prepared statement it runs (~3 KB of SQLite memory per
    row of a multi-row INSERT). Before: one shape per row count, so flushes of every size
    from 1 to 500 kept ~100 MiB in the cache of a saturated proxy."""
    conn = _table()
    inserts: list[str] = []
    conn.set_trace_callback(inserts.append)
    for count in range(1, 700):
        insert_rows(conn, [(f"k{index}", index, None) for index in range(count)], *_IGNORE)
    conn.set_trace_callback(None)
    rows_per_statement = {sql.count("(") - 1 for sql in inserts if sql.startswith("INSERT")}  # the column list's own "("
    assert len(rows_per_statement) <= 9, sorted(rows_per_statement)
    assert all(rows & (rows - 1) == 0 for rows in rows_per_statement), sorted(rows_per_statement)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (699,)


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 5000), power=st.integers(0, 9))
def test_chunks_are_powers_of_two_that_add_up(total: int, power: int) -> None:
    from metering.sqlite_rows import _chunk_sizes

    sizes = _chunk_sizes(total, 1 << power)
    assert sum(sizes) == total
    assert all(size & (size - 1) == 0 and size <= 1 << power for size in sizes)
    assert len(sizes) <= total // (1 << power) + power
