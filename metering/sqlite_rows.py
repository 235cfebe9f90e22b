"""Many rows in few statements, so that a flush is not starved of the GIL.

Python's sqlite3 releases the GIL around each step of a statement, and
`executemany` steps once per row: a flush thread writing 10,000 events takes the
GIL back 10,000 times. Behind an event loop that is busy serving requests, each of
those waits up to the interpreter's switch interval (5 ms): 10,000 rows took 83 s
beside a busy thread instead of 0.07 s alone, and under a saturating load the
metering backlog grew without end (bench/READING.md). One multi-row INSERT per chunk
steps once per chunk: the same 10,000 rows took 0.11 s beside the busy thread.

Each row is still applied on its own (`OR IGNORE`, `ON CONFLICT … DO UPDATE` and
constraints behave as for single-row statements, in order).

A chunk holds a power of two of rows (the full chunk, then the rest by its binary
digits), so a table has a dozen statement shapes whatever its flushes' sizes. The
connection keeps every prepared statement it ran in its cache (128 by default), and
a prepared multi-row INSERT holds about 3 KB of SQLite's memory per row: with one
shape per row count, a saturated proxy's flushes of every size from 1 to 500 filled
that cache with ~100 MiB (RSS that grew under load and never came back, bench/READING.md).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import lru_cache
from itertools import chain
from typing import Any

__all__ = ["insert_rows", "statement"]

#: Rows per statement at most, a power of two: keeps each statement's text small (a few
#: tens of KB) and its prepared form (under a MiB).
_ROWS_PER_STATEMENT = 256


@lru_cache(maxsize=64)
def statement(head: str, row: str, tail: str = "", count: int = 1) -> str:
    """`head VALUES row[, row…] tail`: `count` rows' INSERT."""
    return f"{head} VALUES {', '.join([row] * count)} {tail}".rstrip()


def insert_rows(conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], head: str, row: str, tail: str = "") -> None:
    """Run `head VALUES row, row, … tail` over `rows`, as few statements as SQLite's
    bound-parameter limit allows. `row` is one row's placeholders, e.g. `(?, ?, NULL)`,
    and every row of `rows` binds the same number of parameters."""
    if not rows:
        return
    width = max(1, len(rows[0]))
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    per = 1 << (max(1, min(_ROWS_PER_STATEMENT, limit // width)).bit_length() - 1)
    start = 0
    for count in _chunk_sizes(len(rows), per):
        chunk = rows[start:start + count]
        start += count
        # Flattened in C: a third less than a comprehension (issue #20).
        conn.execute(statement(head, row, tail, count), list(chain.from_iterable(chunk)))


def _chunk_sizes(total: int, per: int) -> list[int]:
    """`total` as chunks of `per` rows (a power of two), then the rest by its binary
    digits, largest first: only powers of two up to `per` ever occur."""
    sizes = [per] * (total // per)
    rest = total % per
    while rest:
        top = 1 << (rest.bit_length() - 1)
        sizes.append(top)
        rest -= top
    return sizes
