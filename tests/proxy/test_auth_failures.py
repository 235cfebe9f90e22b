"""The tally of refused credentials: exact counts over the last hour, bounded memory,
and the same rows from several workers' published tallies."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from proxy.auth_failures import OTHER_KEYS, FailureTally

NOW = 1_800_000_000.0


def test_failures_are_counted_by_key_and_reason_within_the_window() -> None:
    tally = FailureTally()
    for _ in range(3):
        tally.record("CKIAAAAAAAAAAAAAAAAA", "bad_signature", "acme", "chat", now=NOW)
    tally.record("CKIAAAAAAAAAAAAAAAAA", "clock_skew", now=NOW - 10)
    tally.record(None, "missing", now=NOW - 7200)  # two hours ago: out of the window
    rows = tally.rows(NOW)
    assert [(r.access_key_id, r.reason, r.count, r.org) for r in rows] == [
        ("CKIAAAAAAAAAAAAAAAAA", "bad_signature", 3, "acme"), ("CKIAAAAAAAAAAAAAAAAA", "clock_skew", 1, None)]
    assert tally.rows(NOW + 3600 + 600) == []


def test_a_spray_of_random_ids_keeps_the_repeated_key_listed() -> None:
    tally = FailureTally(max_entries=50)
    for i in range(40):
        tally.record("CKIAREPEATED00000000", "bad_signature", now=NOW + i)
    for i in range(5000):
        tally.record(f"CKIASPRAY{i:011d}", "unknown_key", now=NOW + 40 + i * 0.01)
    assert len(tally) <= 51
    rows = tally.rows(NOW + 100)
    assert rows[0].access_key_id in ("CKIAREPEATED00000000", OTHER_KEYS)
    assert any(r.access_key_id == "CKIAREPEATED00000000" and r.count == 40 for r in rows)
    assert sum(r.count for r in rows) == 5040


@given(st.lists(st.tuples(st.integers(0, 300), st.sampled_from(["unknown_key", "bad_signature", "missing"]),
                          st.floats(0, 3000)), max_size=400))
def test_the_tally_is_bounded_and_exact(records: list[tuple[int, str, float]]) -> None:
    """Whatever arrives within the hour: at most max_entries rows plus the folded one,
    and the counts add up to the number of failures recorded."""
    tally = FailureTally(max_entries=20)
    for key, reason, offset in sorted(records, key=lambda record: record[2]):
        tally.record(f"CKIA{key:016d}", reason, now=NOW + offset)
        assert len(tally) <= 21
    assert sum(row.count for row in tally.rows(NOW + 3000)) == len(records)


def test_the_workers_tallies_add_up(tmp_path: Path) -> None:
    first, second = FailureTally(), FailureTally()
    first.publish_to(str(tmp_path))
    # The second worker's file, as it would have published it (its pid differs).
    second.record("CKIABBBBBBBBBBBBBBBB", "unknown_key", now=NOW - 30)
    second.record("CKIAAAAAAAAAAAAAAAAA", "bad_signature", "acme", "chat", now=NOW - 20)
    second._publish_to = tmp_path / "auth-failures-999999.json"
    second._changed = True
    second.publish()
    first.record("CKIAAAAAAAAAAAAAAAAA", "bad_signature", now=NOW - 10, count=2)
    first.publish()
    rows = first.merged_rows(NOW)
    assert [(r.access_key_id, r.reason, r.count, r.org) for r in rows] == [
        ("CKIAAAAAAAAAAAAAAAAA", "bad_signature", 3, "acme"), ("CKIABBBBBBBBBBBBBBBB", "unknown_key", 1, None)]
    assert rows[0].last_seen == NOW - 10
    assert len(list(tmp_path.iterdir())) == 2
