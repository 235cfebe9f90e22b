"""The compiled delta walk (adapters/frame_walk.py, issue #20) and how it is loaded
(adapters/compiled.py).

* Its source run by the interpreter, its build where `make install` made one, and the
  interpreter-tuned fallback (`adapters.frame_scan.skip_frames_interpreted`) answer the
  same on any input: frame runs, corrupt and cut ones, and bytes that are no frames.
* Where a build is there, it is the one the watcher uses: an import that fails quietly
  would leave the interpreter's loop running unnoticed.
* A build that is older than its source, or that does not load, is not used.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import sysconfig
from binascii import crc32
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import adapters
import adapters.compiled
import adapters.frame_scan
import adapters.watch
from adapters.compiled import load
from adapters.frame_scan import skip_frames_interpreted
from tests.adapters.strategies import fuzz
from tests.adapters.walks import compiled_walk, source_walk

_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")
_compiled = compiled_walk()
_IMPLEMENTATIONS = [skip_frames_interpreted, source_walk().skip_frames] + (
    [] if _compiled is None else [_compiled.skip_frames])


def _frame(headers: bytes, payload: bytes) -> bytes:
    prelude = struct.pack(">II", 16 + len(headers) + len(payload), len(headers))
    body = prelude + struct.pack(">I", crc32(prelude)) + headers + payload
    return body + struct.pack(">I", crc32(body))


_kinds = st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=4)), min_size=1, max_size=3)


@st.composite
def _walks(draw: st.DrawFn) -> tuple[bytes, int, int, bytes, int]:
    """Arguments for a walk: runs of frames of a few kinds (so that walks go somewhere),
    perhaps with a byte flipped and cut short, or any bytes; a kind of one of the frames
    or made up; a start at a frame or anywhere."""
    kinds = draw(_kinds)
    frames = []
    for _ in range(draw(st.integers(0, 6))):
        headers, prefix = draw(st.sampled_from(kinds))
        frames.append(_frame(headers, prefix + draw(st.binary(max_size=8))))
    data = b"".join(frames)
    if draw(st.booleans()) and data:
        corrupt = bytearray(data)
        corrupt[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        data = bytes(corrupt)
    data = data[: len(data) - draw(st.integers(0, 20))] if draw(st.booleans()) else data
    if draw(st.booleans()):
        data = draw(st.binary(max_size=80))
    headers, prefix = draw(st.sampled_from(kinds))
    head = draw(st.sampled_from([headers + prefix, headers, draw(st.binary(max_size=16))]))
    headers_length = draw(st.sampled_from([len(headers), draw(st.integers(0, 2**32 - 1))]))
    min_total = draw(st.sampled_from([16 + len(head), draw(st.integers(0, 2**32))]))
    starts = [sum(map(len, frames[:index])) for index in range(len(frames) + 1)]
    pos = draw(st.sampled_from(starts) | st.integers(0, len(data) + 2))
    return data, pos, headers_length, head, min_total


@fuzz(500, deadline=None)
@given(arguments=_walks())
@example(arguments=(b"", 0, 0, b"", 0))
@example(arguments=(_frame(b"ab", b"c") * 3, 0, 2, b"abc", 19))  # a whole run
@example(arguments=(_frame(b"ab", b"c") * 3, 0, 2, b"abc", 20))  # each frame too short for its kind
@example(arguments=((_frame(b"ab", b"c") * 3)[:-1], 0, 2, b"abc", 19))  # the last cut short
@example(arguments=(b"\xff" * 12 + _frame(b"ab", b"c"), 0, 2, b"abc", 19))  # a length past the end
def test_every_implementation_walks_alike(arguments: tuple[bytes, int, int, bytes, int]) -> None:
    results = {implementation(*arguments) for implementation in _IMPLEMENTATIONS}
    assert len(results) == 1, results
    (after, last), = results
    assert after == arguments[1] or 0 <= last < after <= len(arguments[0])


def _built() -> Path | None:
    path = Path(adapters.__file__).with_name(f"frame_walk{_SUFFIX}")
    return path if path.exists() else None


@pytest.mark.skipif(_built() is None, reason="not built here (no C compiler at `make install`): the fallback runs")
def test_a_build_that_is_there_is_the_walk_the_watcher_uses() -> None:
    assert _compiled is not None, "adapters/frame_walk is built but does not load, or is older than its source"
    assert _compiled.__file__ == str(_built())
    assert adapters.frame_scan.skip_frames is _compiled.skip_frames
    assert adapters.watch.skip_frames is _compiled.skip_frames


@pytest.mark.skipif(_built() is not None, reason="built here: the test above says which walk runs")
def test_without_a_build_the_watcher_walks_with_the_fallback() -> None:
    assert adapters.frame_scan.skip_frames is skip_frames_interpreted
    assert adapters.watch.skip_frames is skip_frames_interpreted


# --- load: which build is used ------------------------------------------------------------

@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An importable package `walkpkg` with a module `walk`, and nothing built."""
    root = tmp_path / "walkpkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "walk.py").write_text("SOURCE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield root
    for name in [name for name in sys.modules if name.startswith("walkpkg")]:
        del sys.modules[name]


def test_no_build_loads_nothing(package: Path) -> None:
    assert load("walkpkg.walk") is None


def test_a_build_that_does_not_load_is_not_used(package: Path, caplog: pytest.LogCaptureFixture) -> None:
    (package / f"walk{_SUFFIX}").write_bytes(b"not an ELF file")
    with caplog.at_level(logging.WARNING, "adapters.compiled"):
        assert load("walkpkg.walk") is None
    assert "did not load" in caplog.text


def test_a_build_older_than_its_source_is_not_used(package: Path, caplog: pytest.LogCaptureFixture) -> None:
    build = package / f"walk{_SUFFIX}"
    build.write_bytes(b"an old build")
    source = package / "walk.py"
    os.utime(build, (1_000_000, 1_000_000))
    os.utime(source, (2_000_000, 2_000_000))
    with caplog.at_level(logging.WARNING, "adapters.compiled"):
        assert load("walkpkg.walk") is None
    assert "older than walk.py" in caplog.text and "walkpkg.walk" not in sys.modules


def test_a_cython_build_older_than_its_pyx_is_not_used(package: Path, caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A Cython module's source is its `.pyx` (adapters/delta_scan.pyx): an edit to it
    since the last `make install` leaves the old build out, as for a mypyc module's `.py`."""
    monkeypatch.setattr(adapters.compiled, "CYTHON", ("walkpkg.walk",))
    build = package / f"walk{_SUFFIX}"
    build.write_bytes(b"an old build")
    (package / "walk.py").unlink()
    source = package / "walk.pyx"
    source.write_text("def walk(): pass\n")
    os.utime(build, (1_000_000, 1_000_000))
    os.utime(source, (2_000_000, 2_000_000))
    with caplog.at_level(logging.WARNING, "adapters.compiled"):
        assert load("walkpkg.walk") is None
    assert "older than walk.pyx" in caplog.text
