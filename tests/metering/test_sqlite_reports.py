"""Report claims on SQLite (`metering/sqlite_reports.py`): of every process and store
instance on one file, exactly one claims a reported usage's id."""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.events import UsageEvent
from metering.sqlite_reports import CLAIM_TTL_SECONDS
from metering.sqlite_store import SQLiteStore

pytestmark = pytest.mark.anyio


async def test_a_second_store_on_the_file_finds_the_id_claimed(tmp_path: Path) -> None:
    """What two proxies on one file do: nothing flushed yet, the second claim still fails."""
    with SQLiteStore(tmp_path / "one.db") as first, SQLiteStore(tmp_path / "one.db") as second:
        assert await first.claim_report("report:acme/batch:job-1") is True
        assert await second.claim_report("report:acme/batch:job-1") is False
        assert await first.claim_report("report:acme/batch:job-1") is False
        assert await second.claim_report("report:acme/batch:job-2") is True


async def test_a_stored_report_is_a_duplicate_without_a_claim(
    tmp_path: Path, make_event: Callable[..., UsageEvent],
) -> None:
    """Reports recorded before claims were kept (or whose claim expired) are in
    `usage_events`, which answers for them."""
    with SQLiteStore(tmp_path / "old.db") as store:
        await store.write_events([make_event("report:acme/batch:old")])
        assert await store.claim_report("report:acme/batch:old") is False


async def test_an_expired_claim_is_deleted_and_its_id_can_be_claimed_again(tmp_path: Path) -> None:
    """As DynamoDB's TTL does with its claims: an id whose event never got stored (its
    journal lost) is claimable again after `CLAIM_TTL_SECONDS`; the table does not grow."""
    now = [1000.0]
    with SQLiteStore(tmp_path / "ttl.db", clock=lambda: now[0]) as store:
        assert await store.claim_report("a") is True
        now[0] += CLAIM_TTL_SECONDS - 1
        assert await store.claim_report("a") is False
        now[0] += 1
        assert await store.claim_report("b") is True
        assert store._conn.execute("SELECT report_id FROM report_claims").fetchall() == [("b",)]
        assert await store.claim_report("a") is True


@settings(max_examples=30, deadline=None)
@given(stores=st.integers(2, 4), claims=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5)), max_size=30))
def test_each_id_is_claimed_exactly_once_whatever_the_interleaving(
    stores: int, claims: list[tuple[int, int]],
) -> None:
    """N store instances on one file claim ids in any order, all at once (each claim on
    its store's thread): each id is won by exactly one claim."""
    with tempfile.TemporaryDirectory() as directory:
        opened = [SQLiteStore(Path(directory) / "claims.db") for _ in range(stores)]
        try:
            async def claim_all() -> list[bool]:
                return await asyncio.gather(*(opened[index % stores].claim_report(f"r{number}")
                                              for index, number in claims))

            won = asyncio.run(claim_all())
        finally:
            for store in opened:
                store.close()
    for number in {number for _, number in claims}:
        assert sum(new for new, (_, claimed) in zip(won, claims, strict=True) if claimed == number) == 1


def _claim_in_a_process(path: str, ids: list[str]) -> list[str]:
    """The ids this process won (run in a child process)."""
    async def claim() -> list[str]:
        with SQLiteStore(path) as store:
            return [report_id for report_id in ids if await store.claim_report(report_id)]

    return asyncio.run(claim())


def test_two_processes_claim_each_id_once(tmp_path: Path) -> None:
    """Two processes on one file claim the same ids, in opposite orders: each id is won
    by one of them, and none by both."""
    path = str(tmp_path / "shared.db")
    SQLiteStore(path).close()  # the file and its key exist before either process opens it
    ids = [f"report:acme/batch:{number}" for number in range(100)]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        forward = pool.submit(_claim_in_a_process, path, ids)
        backward = pool.submit(_claim_in_a_process, path, ids[::-1])
        won = [set(forward.result()), set(backward.result())]
    assert not won[0] & won[1]
    assert won[0] | won[1] == set(ids)
