"""adapters/delta_scan.pyx, the C sizing of delta text (issue #20), against the regular
expressions it stands in for (`adapters.delta_size`'s `*_interpreted`).

* On generated streams of every delta kind, with any text and padding, and on arbitrary
  bytes made of the pieces the expressions look for (quotes, backslashes, newlines,
  keys, base64 with and without padding, cut anywhere): the same answers.
* Where a build is there, it is what the watcher sizes with; where none is, the
  expressions are.
"""

from __future__ import annotations

import base64
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import adapters
import adapters.delta_size as delta_size
import adapters.watch
from adapters.compiled import load
from adapters.delta_size import (
    CLAUDE_TEXT_HEAD,
    TEXT_DELTA_MIDDLES_IN_ORDER,
    claude_delta_text_bytes_interpreted,
    converse_delta_text_bytes_interpreted,
)
from tests.adapters.strategies import fuzz
from tests.adapters.test_delta_size import (
    _claude,
    _claude_deltas,
    _converse,
    _converse_deltas,
    _paddings,
)

_BUILT = Path(adapters.__file__).with_name(f"delta_scan{sysconfig.get_config_var('EXT_SUFFIX')}")
_scan = load("adapters.delta_scan")
needs_build = pytest.mark.skipif(not _BUILT.exists(), reason="not built here (no C compiler at `make install`)")

_CONVERSE_PIECES = st.sampled_from([b'"delta":{', b'"text":"', b'"toolUse":{"input":"', b'"reasoningContent":{"text":"',
                                    b'"', b"\\", b"\\\\", b'\\"', b"\n", b"\\\n", b"}", b"a", b"\xe6\x9d\xb1", b"\x00"])
_B64 = st.binary(max_size=12).map(base64.b64encode)
_CLAUDE_PIECES = st.sampled_from([CLAUDE_TEXT_HEAD, *TEXT_DELTA_MIDDLES_IN_ORDER[:3], b'"', b"=", b"==", b"\\", b"A",
                                  b"*", b"\n", base64.b64encode(b'\\\\"}}'), base64.b64encode(b'\\n"}}'),
                                  base64.b64encode(b':"x\\'), base64.b64encode(b'\\y"}}')])


def _claude_size(frames: bytes, end: int) -> int:
    assert _scan is not None
    size: int = _scan.claude_text_bytes(frames, end, CLAUDE_TEXT_HEAD, TEXT_DELTA_MIDDLES_IN_ORDER, 5)
    return size


@needs_build
@fuzz(300, deadline=None)
@given(deltas=st.lists(st.tuples(_converse_deltas, _paddings), max_size=6), cut=st.integers(0, 40))
def test_generated_converse_streams_are_sized_alike(deltas: list[tuple[dict[str, Any], str | None]], cut: int) -> None:
    assert _scan is not None
    frames = b"".join(_converse(delta, padding) for delta, padding in deltas)
    for end in (len(frames), max(0, len(frames) - cut)):
        assert _scan.converse_text_bytes(frames, end) == converse_delta_text_bytes_interpreted(frames, end)


@needs_build
@fuzz(300, deadline=None)
@given(deltas=st.lists(st.tuples(_claude_deltas, st.integers(0, 12), _paddings), max_size=6), cut=st.integers(0, 40))
def test_generated_claude_streams_are_sized_alike(deltas: list[tuple[dict[str, Any], int, str | None]], cut: int) -> None:
    frames = b"".join(_claude(delta, index, padding) for delta, index, padding in deltas)
    # Text deltas of blocks 0 to 9 only (the usual stream): the C answer itself, never -1.
    usual = all(delta.get("type") == "text_delta" and index < 10 for delta, index, _ in deltas)
    for end in (len(frames), max(0, len(frames) - cut)):
        expected = claude_delta_text_bytes_interpreted(frames, end)
        size = _claude_size(frames, end)
        assert size == expected if usual else size in (-1, expected)  # -1: the caller asks the expressions
        assert delta_size.claude_delta_text_bytes(frames, end) == expected


@needs_build
@fuzz(500, deadline=None)
@given(pieces=st.lists(_CONVERSE_PIECES | st.binary(max_size=4), max_size=24), end=st.integers(-2, 120))
@example(pieces=[b'"delta":{', b'"text":"', b"a\\", b"\n", b'"'], end=120)  # an escaped newline: no match
@example(pieces=[b'"delta":{', b'"text":"', b"ab\\\\", b'"', b'"delta":{"toolUse":{"input":"', b'\\"x"'], end=120)
def test_any_bytes_are_sized_alike_converse(pieces: list[bytes], end: int) -> None:
    assert _scan is not None
    frames = b"".join(pieces)
    assert _scan.converse_text_bytes(frames, end) == converse_delta_text_bytes_interpreted(frames, max(0, end))


@needs_build
@fuzz(500, deadline=None)
@given(pieces=st.lists(_CLAUDE_PIECES | _B64 | st.binary(max_size=3), max_size=16), end=st.integers(-2, 400))
@example(pieces=[CLAUDE_TEXT_HEAD, TEXT_DELTA_MIDDLES_IN_ORDER[0], base64.b64encode(b':"a\\\\"}}'), b'"'], end=400)
@example(pieces=[CLAUDE_TEXT_HEAD, TEXT_DELTA_MIDDLES_IN_ORDER[1], b"YQ=", b'"'], end=400)  # not whole quads
@example(pieces=[CLAUDE_TEXT_HEAD, TEXT_DELTA_MIDDLES_IN_ORDER[1], b"YQ==YQ==", b'"'], end=400)  # padding inside
def test_any_bytes_are_sized_alike_claude(pieces: list[bytes], end: int) -> None:
    frames = b"".join(pieces)
    expected = claude_delta_text_bytes_interpreted(frames, max(0, end))
    assert _claude_size(frames, end) in (-1, expected)
    assert delta_size.claude_delta_text_bytes(frames, end) == expected


@needs_build
def test_backslash_pairs_are_counted_across_tails_as_across_one_text() -> None:
    """`_unescaped_size` pairs backslashes left to right over all tails laid end to end."""
    tails = [base64.b64encode(b':"a\\'), base64.b64encode(b'\\b"}}'), base64.b64encode(b':"\\\\"}}')]
    frames = b"".join(CLAUDE_TEXT_HEAD + TEXT_DELTA_MIDDLES_IN_ORDER[0] + tail + b'"' for tail in tails)
    expected = claude_delta_text_bytes_interpreted(frames, len(frames))
    assert _claude_size(frames, len(frames)) == expected


@needs_build
def test_a_build_that_is_there_is_what_the_watcher_sizes_with() -> None:
    assert _scan is not None, "adapters/delta_scan is built but does not load, or is older than its source"
    assert delta_size.converse_delta_text_bytes is _scan.converse_text_bytes
    assert adapters.watch.converse_delta_text_bytes is _scan.converse_text_bytes
    assert adapters.watch._DELTA_CHUNKS["anthropic"][1] is delta_size.claude_delta_text_bytes
    assert delta_size.claude_delta_text_bytes is not claude_delta_text_bytes_interpreted


@pytest.mark.skipif(_BUILT.exists(), reason="built here: the test above says what the watcher sizes with")
def test_without_a_build_the_watcher_sizes_with_the_expressions() -> None:
    assert delta_size.converse_delta_text_bytes is converse_delta_text_bytes_interpreted
    assert delta_size.claude_delta_text_bytes is claude_delta_text_bytes_interpreted
