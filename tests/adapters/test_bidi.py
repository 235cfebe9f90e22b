"""Nova Sonic usage from a bidirectional stream's output (adapters/bidi.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.bidi import BidiUsageWatcher, speaks_bidi
from adapters.eventstream import encode_message, exception_message
from adapters.usage import Usage

_CHUNK = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}


def frame(event: dict[str, Any]) -> bytes:
    data = base64.b64encode(json.dumps({"event": event}).encode()).decode()
    return encode_message(_CHUNK, json.dumps({"bytes": data}).encode())


def counts(speech_in: int, text_in: int, speech_out: int, text_out: int) -> dict[str, Any]:
    return {"input": {"speechTokens": speech_in, "textTokens": text_in},
            "output": {"speechTokens": speech_out, "textTokens": text_out}}


def usage_event(delta: dict[str, Any] | None, total: dict[str, Any] | None) -> bytes:
    details = {key: value for key, value in (("delta", delta), ("total", total)) if value is not None}
    return frame({"usageEvent": {"sessionId": "s", "promptName": "p", "completionId": "c", "details": details}})


@pytest.mark.parametrize("model, expected", [
    ("amazon.nova-sonic-v1:0", True), ("us.amazon.nova-sonic-v1:0", True), ("amazon.nova-2-sonic-v1:0", True),
    ("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-sonic-v1:0", True),
    ("amazon.nova-lite-v1:0", False), ("anthropic.claude-haiku-4-5-20251001-v1:0", False),
])
def test_which_models_speak_the_bidirectional_stream(model: str, expected: bool) -> None:
    assert speaks_bidi(model) is expected


def test_the_last_total_is_the_sessions_usage_split_by_speech_and_text() -> None:
    watcher = BidiUsageWatcher()
    stream = (frame({"completionStart": {}}) + usage_event(counts(0, 8, 0, 0), counts(0, 8, 0, 0))
              + frame({"textOutput": {"content": "hi"}}) + exception_message("throttlingException", "slow")
              + usage_event(counts(13, 0, 5, 8), counts(13, 8, 5, 8)))
    relayed = b"".join(watcher.feed(stream[i:i + 7]) for i in range(0, len(stream), 7))
    assert relayed == stream  # whole frames, all of them, in order
    assert watcher.events == 2
    assert watcher.usage() == Usage(input_tokens=21, output_tokens=13, speech_input_tokens=13,
                                    speech_output_tokens=5)
    assert watcher.usage(estimated=True).estimated


def test_deltas_are_summed_when_no_total_came() -> None:
    watcher = BidiUsageWatcher()
    watcher.feed(usage_event(counts(1, 2, 3, 4), None) + usage_event(counts(10, 20, 30, 40), None))
    assert watcher.usage() == Usage(input_tokens=33, output_tokens=77, speech_input_tokens=11, speech_output_tokens=33)


def test_a_partial_frame_is_held_back_and_nothing_is_metered_from_it() -> None:
    watcher = BidiUsageWatcher()
    whole = usage_event(None, counts(4, 4, 4, 4))
    assert watcher.feed(whole[:-1]) == b""
    assert watcher.usage() == Usage()
    assert watcher.feed(whole[-1:]) == whole
    assert watcher.usage().total_tokens == 16


@given(st.binary(max_size=200))
def test_whatever_the_upstream_sends_is_relayed_and_never_raises(data: bytes) -> None:
    watcher = BidiUsageWatcher()
    out = watcher.feed(data)
    assert data.startswith(out)
    watcher.usage()
