"""Properties of StreamUsageWatcher over the recorded streams: however the bytes
are chunked, cut or corrupted, it forwards them faithfully and never raises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.watch import StreamUsageWatcher
from tests.adapters.cassettes import Interaction, interaction
from tests.adapters.test_watch import STREAMS

# A generous deadline: it only exists to turn a hang into a failure.
PROPERTY = settings(max_examples=100, deadline=5000)
stream_names = st.sampled_from(sorted(STREAMS))
BLOCKED_STREAM = "openllmetry/test_guardrail_invoke_stream.yaml"


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _feed(item: Interaction, data: bytes, cuts: list[int]) -> tuple[StreamUsageWatcher, bytes]:
    watcher = StreamUsageWatcher(item.operation, item.model_id, item.request_body)
    forwarded = b"".join(watcher.feed(piece) for piece in _pieces(data, cuts))
    return watcher, forwarded


cut_lists = st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=60)


@PROPERTY
@given(name=stream_names, cuts=cut_lists)
def test_any_split_forwards_the_same_bytes_and_usage(name: str, cuts: list[int]) -> None:
    item = interaction(name)
    watcher, forwarded = _feed(item, item.body, cuts)
    assert forwarded == item.body
    assert watcher.pending == 0 and watcher.error is None
    assert watcher.complete is (name != BLOCKED_STREAM)  # the one without invocation metrics
    watcher.end()
    assert watcher.finish() == STREAMS[name]


@PROPERTY
@given(name=stream_names, end=st.integers(min_value=0), cuts=cut_lists)
def test_a_truncated_stream_is_estimated(name: str, end: int, cuts: list[int]) -> None:
    item = interaction(name)
    data = item.body[: end % len(item.body)]
    watcher, forwarded = _feed(item, data, cuts)
    assert data.startswith(forwarded)
    assert len(forwarded) + watcher.pending == len(data)
    usage = watcher.finish()
    # Usage is only ever in the last frame, which a truncated stream lacks.
    assert usage.estimated and not watcher.complete and watcher.error is None


@PROPERTY
@given(
    name=stream_names,
    position=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
    cuts=cut_lists,
)
def test_a_corrupted_stream_is_flagged_never_raised(name: str, position: int, flip: int, cuts: list[int]) -> None:
    item = interaction(name)
    data = bytearray(item.body)
    data[position % len(data)] ^= flip
    corrupted = bytes(data)
    watcher, forwarded = _feed(item, corrupted, cuts)
    # Whatever was not forwarded is a partial frame still held back.
    assert corrupted.startswith(forwarded)
    assert len(forwarded) + watcher.pending == len(corrupted)
    if watcher.error is not None:
        assert forwarded == corrupted  # after an error, bytes pass through unchanged
    usage = watcher.finish()
    # CRC-32 catches every single-byte error in a frame it checks; the deltas passed over
    # unread (issue #20) are the client's to check, and never make an exact count wrong.
    assert watcher.error is not None or (usage.estimated and not watcher.complete) or usage == STREAMS[name]


@PROPERTY
@given(
    operation=st.sampled_from(["InvokeModelWithResponseStream", "ConverseStream"]),
    noise=st.binary(max_size=4096),
    cuts=cut_lists,
)
def test_arbitrary_bytes_never_raise(operation: str, noise: bytes, cuts: list[int]) -> None:
    watcher = StreamUsageWatcher(operation, "anthropic.claude-3-haiku-20240307-v1:0", b'{"prompt": "hi"}')
    forwarded = b"".join(watcher.feed(piece) for piece in _pieces(noise, cuts))
    assert noise.startswith(forwarded)
    assert len(forwarded) + watcher.pending == len(noise)
    assert watcher.finish().estimated


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_byte_by_byte(name: str) -> None:
    item = interaction(name)
    watcher = StreamUsageWatcher(item.operation, item.model_id, item.request_body)
    forwarded = b"".join(watcher.feed(item.body[i : i + 1]) for i in range(len(item.body)))
    assert forwarded == item.body
    watcher.end()
    assert watcher.finish() == STREAMS[name]
