"""The walk over a run of delta frames, written to be compiled by mypyc (issue #20).

`adapters.frame_scan.skip_frames` passes over the deltas of a stream reading only each
frame's prelude and leading bytes; in a 200-frame burst that loop was most of the
usage watcher's CPU, about 0.4 µs a frame in the interpreter. `make install` compiles
this module with mypyc (adapters/compiled.py loads the build), where the same loop is
C over the bytes: a prelude's lengths read byte by byte, the leading bytes compared
with one slice and a memcmp, a few hundredths of a µs a frame.

The source is written for the compiler, not the interpreter: indexing bytes one at a
time is slower than `struct` in CPython. So when no build loads (no C compiler, the
container image), `adapters.frame_scan` uses its own interpreter-tuned loop, and the
tests hold the two (and this source run uncompiled) to the same answers on any input
(tests/adapters/test_frame_walk.py).
"""

from __future__ import annotations

__all__ = ["skip_frames"]


def skip_frames(data: bytes, pos: int, headers_length: int, head: bytes, min_total: int) -> tuple[int, int]:
    """What `adapters.frame_scan.skip_frames` returns: where a run of whole frames of
    `headers_length` header bytes, each beginning with `head` after its prelude and at
    least `min_total` bytes long, stops from `pos`, and where its last frame starts (-1:
    none)."""
    last = -1
    size = len(data)
    width = len(head)
    while size - pos >= 12:
        total = (data[pos] << 24) | (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
        if total < min_total or size - pos < total:
            break
        length = (data[pos + 4] << 24) | (data[pos + 5] << 16) | (data[pos + 6] << 8) | data[pos + 7]
        start = pos + 12
        if length != headers_length or data[start : start + width] != head:
            break
        last = pos
        pos += total
    return pos, last
