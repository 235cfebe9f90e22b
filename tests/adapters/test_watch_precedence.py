"""Bedrock's own counts always win (issue #16, item 6).

Every family's stream chunks may carry running counts of their own (the AWS
chunk schema of Titan lists `totalOutputTextTokenCount` in every chunk; Llama's
`generation_token_count` is cumulative; Claude's `message_delta` too). None of
them may end the watch: when a later chunk carries
`amazon-bedrock-invocationMetrics`, that is the figure metered. A family's own
counts are final only when the stream ended whole without invocation metrics
(the guardrail-blocked Titan stream, openllmetry `test_guardrail_invoke_stream.yaml`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from adapters import FAMILIES
from adapters.eventstream import event_message
from adapters.usage import Usage
from adapters.watch import StreamUsageWatcher, _prefer
from tests.adapters.strategies import fuzz

#: What Bedrock bills, in the last chunk's invocation metrics.
BILLED = Usage(input_tokens=11, output_tokens=31)
METRICS = {"inputTokenCount": 11, "outputTokenCount": 31, "invocationLatency": 900, "firstByteLatency": 300}
#: The running output counts the family's own chunks carry before the last one
#: (the issue's Titan stream was metered at the first: 4 instead of 31).
RUNNING = (4, 9, 17, 26)


def _openai(count: int, first: bool) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": "word "}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": count, "total_tokens": 7 + count}}


def _anthropic(count: int, first: bool) -> dict[str, Any]:
    if first:
        return {"type": "message_start", "message": {"usage": {"input_tokens": 7, "output_tokens": count}}}
    return {"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": count}}


#: family → one chunk with the family's own counts (`count` output tokens so far).
CHUNKS: dict[str, Callable[[int, bool], dict[str, Any]]] = {
    "titan": lambda count, first: {
        "outputText": "word ", "index": 0, "inputTextTokenCount": 7 if first else None,
        "totalOutputTextTokenCount": count, "completionReason": None,
    },
    "anthropic": _anthropic,
    "llama": lambda count, first: {
        "generation": "word ", "prompt_token_count": 7 if first else None,
        "generation_token_count": count, "stop_reason": None,
    },
    "nova": lambda count, first: {"metadata": {"usage": {"inputTokens": 7, "outputTokens": count}}},
    "cohere": lambda count, first: {
        "is_finished": False, "event_type": "stream-end",
        "response": {"meta": {"billed_units": {"input_tokens": 7, "output_tokens": count}}},
    },
    "mistral": _openai,
    "ai21": _openai,
    "deepseek": _openai,
    "openai": _openai,
    "generic": lambda count, first: {"outputText": "word "},
}
MODELS = {
    "titan": "amazon.titan-text-express-v1",
    "anthropic": "anthropic.claude-3-haiku-20240307-v1:0",
    "llama": "meta.llama3-8b-instruct-v1:0",
    "nova": "amazon.nova-lite-v1:0",
    "cohere": "cohere.command-r-v1:0",
    "mistral": "mistral.mistral-large-2407-v1:0",
    "ai21": "ai21.jamba-1-5-mini-v1:0",
    "deepseek": "us.deepseek.r1-v1:0",
    "openai": "openai.gpt-oss-20b-1:0",
    "generic": "stability.sd3-large-v1:0",
}


def test_every_family_is_covered() -> None:
    assert set(CHUNKS) == set(FAMILIES) == set(MODELS)


def _frame(chunk: dict[str, Any]) -> bytes:
    data = base64.b64encode(json.dumps(chunk).encode()).decode()
    return event_message("chunk", {"bytes": data, "p": "abcdefgh"})


def _frames(family: str, running: tuple[int, ...] = RUNNING) -> list[bytes]:
    make = CHUNKS[family]
    return [_frame(make(count, index == 0)) for index, count in enumerate(running)]


def _last(family: str) -> bytes:
    """The stream's last chunk: the family's own final counts plus Bedrock's metrics."""
    return _frame({**CHUNKS[family](BILLED.output_tokens, False), "amazon-bedrock-invocationMetrics": METRICS})


def _watcher(family: str) -> StreamUsageWatcher:
    return StreamUsageWatcher("InvokeModelWithResponseStream", MODELS[family], b'{"inputText": "hello"}')


@pytest.mark.parametrize("family", sorted(CHUNKS))
def test_the_family_counts_never_end_the_watch(family: str) -> None:
    watcher = _watcher(family)
    for frame in _frames(family):
        assert watcher.feed(frame) == frame
        assert not watcher.complete, "a family's own counts ended the watch before Bedrock's"
    last = _last(family)
    assert watcher.feed(last) == last
    assert watcher.complete
    watcher.end()
    usage = watcher.finish()
    assert usage == BILLED and not usage.estimated


@pytest.mark.parametrize("family", sorted(CHUNKS))
def test_invocation_metrics_win_over_final_looking_family_counts(family: str) -> None:
    """The family's chunk says its output is final (31) but Bedrock billed otherwise."""
    watcher = _watcher(family)
    frames = _frames(family, (4, 99))
    last = _frame({**CHUNKS[family](99, False), "amazon-bedrock-invocationMetrics": METRICS})
    for frame in [*frames, last]:
        watcher.feed(frame)
    watcher.end()
    assert watcher.finish() == BILLED


def test_titan_running_counts_issue_16() -> None:
    """The issue's stream: a running `totalOutputTextTokenCount` in every chunk,
    metered at the first chunk's 4 tokens instead of Bedrock's 31."""
    watcher = _watcher("titan")
    watcher.feed(b"".join(_frames("titan")) + _last("titan"))
    watcher.end()
    assert watcher.finish() == BILLED


@pytest.mark.parametrize("family", sorted(set(CHUNKS) - {"generic"}))
def test_a_stream_that_ended_whole_without_metrics_meters_the_family_counts(family: str) -> None:
    """Bedrock omits the metrics when a guardrail blocks the input (Titan, recorded
    2025-02): a stream that ended whole has nothing more to say, so the family's
    last counts are the final ones."""
    watcher = _watcher(family)
    watcher.feed(b"".join(_frames(family)))
    assert not watcher.complete
    watcher.end()
    usage = watcher.finish()
    assert usage.output_tokens == RUNNING[-1] and usage.input_tokens == 7
    assert not usage.estimated


@pytest.mark.parametrize("family", sorted(CHUNKS))
def test_a_stream_that_stopped_early_is_estimated(family: str) -> None:
    """No end: the client hung up or the upstream cut. A running count is only a
    lower bound, never the billed figure."""
    watcher = _watcher(family)
    watcher.feed(b"".join(_frames(family)[:1]))
    usage = watcher.finish()
    assert usage.estimated and not watcher.complete
    assert usage.output_tokens > 0


def test_a_partial_frame_at_the_end_is_not_a_whole_stream() -> None:
    watcher = _watcher("titan")
    frames = _frames("titan")
    watcher.feed(b"".join(frames) + _last("titan")[:20])
    watcher.end()
    assert watcher.finish().estimated


@fuzz(60)
@given(
    family=st.sampled_from(sorted(CHUNKS)),
    running=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=4096), max_size=8),
)
def test_metrics_win_however_the_bytes_arrive(family: str, running: list[int], cuts: list[int]) -> None:
    data = b"".join(_frames(family, tuple(running))) + _last(family)
    watcher = _watcher(family)
    forwarded = b""
    start = 0
    for cut in sorted(min(cut, len(data)) for cut in cuts):
        forwarded += watcher.feed(data[start:cut])
        start = max(start, cut)
    forwarded += watcher.feed(data[start:])
    assert forwarded == data
    watcher.end()
    assert watcher.finish() == BILLED


# --- how a lower source fills the counts a higher one left at zero -----------------------

_counts = st.sampled_from([0, 0, 1, 7])
_usages = st.builds(Usage, input_tokens=_counts, output_tokens=_counts, cache_read_tokens=_counts,
                    cache_write_tokens=_counts, speech_input_tokens=_counts, speech_output_tokens=_counts,
                    estimated=st.booleans(), service_tier=st.sampled_from([None, "", "flex"]),
                    latency=st.sampled_from([None, "", "optimized"]))


@fuzz(300)
@given(primary=_usages, secondary=_usages)
@example(primary=Usage(input_tokens=12, output_tokens=195), secondary=Usage(input_tokens=12, output_tokens=1))
@example(primary=Usage(input_tokens=12, output_tokens=195), secondary=Usage())
def test_prefer_takes_each_count_the_primary_left_at_zero_from_the_secondary(primary: Usage, secondary: Usage) -> None:
    """Each count the primary left at zero comes from the secondary, as do a tier and a
    latency it did not say; `_prefer` returns the primary itself when the secondary fills
    nothing (issue #20: a stream's usual end), with the value a copy would have."""
    preferred = _prefer(primary, secondary)
    assert preferred is not None
    for count in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        assert getattr(preferred, count) == (getattr(primary, count) or getattr(secondary, count))
    for said in ("service_tier", "latency"):
        assert getattr(preferred, said) == (getattr(primary, said) if getattr(primary, said) is not None
                                            else getattr(secondary, said))
    assert preferred.estimated == (primary.estimated or secondary.estimated)
    assert preferred.speech_input_tokens == preferred.speech_output_tokens == 0  # as the copy always made it
    if secondary == Usage() and not (primary.speech_input_tokens or primary.speech_output_tokens):
        assert preferred is primary
