"""adapters/memo.py: a memo read as a plain dict, filled by `remember` on a miss, stays
bounded and never changes an answer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from adapters.memo import remember


def _answer(key: int) -> tuple[int, str]:
    """A pure function worth remembering (a fresh object each call, compared by value)."""
    return key * key, str(key)


@given(kept=st.integers(1, 8), keys=st.lists(st.integers(-20, 20), max_size=200))
def test_the_memo_stays_bounded_and_answers_what_it_computes(kept: int, keys: list[int]) -> None:
    table: dict[int, tuple[int, str]] = {}
    for key in keys:
        before = dict(table)
        found = table.get(key)  # as the call sites read it: a hit is one dict look-up
        answer = found if found is not None else remember(table, key, _answer(key), kept)
        assert answer == _answer(key)
        assert len(table) <= kept and table[key] == answer
        if found is None:
            # A miss adds its answer to what was kept, or starts again from it when full.
            assert table == ({**before, key: answer} if len(before) < kept else {key: answer})
        else:
            assert table == before


@given(kept=st.integers(1, 8), key=st.text(max_size=4), value=st.integers())
def test_remember_returns_the_object_it_stores(kept: int, key: str, value: int) -> None:
    table: dict[str, list[int]] = {}
    stored = [value]
    assert remember(table, key, stored, kept) is stored and table[key] is stored
