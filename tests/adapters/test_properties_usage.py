"""Properties of the usage readers (issue #9): whatever JSON a body, a stream chunk
or a header holds, every family's reader returns `None` or a `Usage` of
non-negative ints, and text readers return a string. They document no error
(`adapters._fields`: "these helpers never raise"), so none may escape.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from adapters import FAMILIES, converse
from adapters._fields import token_count
from adapters.headers import (
    CACHE_READ_TOKENS_HEADER,
    CACHE_WRITE_TOKENS_HEADER,
    INPUT_TOKENS_HEADER,
    OUTPUT_TOKENS_HEADER,
    usage_from_headers,
    usage_from_invocation_metrics,
)
from adapters.usage import Usage
from adapters.watch import BodyUsageWatcher
from tests.adapters.strategies import (
    COUNT_STRINGS,
    assert_usage,
    body_seeds,
    chunk_seeds,
    converse_events,
    documents,
    fuzz,
    json_values,
    leaves,
    request_seeds,
)

PROPERTY = fuzz(100)
bodies = documents(body_seeds())
chunks = documents(chunk_seeds())
usages = st.one_of(st.none(), st.builds(Usage, *[st.integers(min_value=0, max_value=10**6)] * 4))


@fuzz(200)
@given(st.one_of(leaves, json_values))
@example("²")  # str.isdigit() is True for superscripts, which int() refuses
@example("1" * 5000)  # past int()'s 4300-digit limit
def test_token_count_is_none_or_a_non_negative_int(value: Any) -> None:
    count = token_count(value)
    assert count is None or (type(count) is int and count >= 0)


@fuzz(120)
@given(body=bodies)
@example(body={"usage": {"input_tokens": "²", "prompt_tokens": "²", "inputTokens": "²"},
               "prompt_token_count": "²", "inputTextTokenCount": "²",
               "meta": {"billed_units": {"input_tokens": "²"}}})
def test_usage_from_body(body: dict[str, Any]) -> None:
    for module in FAMILIES.values():
        assert_usage(module.usage_from_body(body))
    assert_usage(converse.usage_from_response(body))


@fuzz(60)
@given(stream=st.lists(chunks, max_size=4), start=usages)
def test_usage_from_chunks_and_output_text(stream: list[dict[str, Any]], start: Usage | None) -> None:
    for module in FAMILIES.values():
        usage = start
        for chunk in stream:
            usage = module.usage_from_chunk(chunk, usage)
            assert_usage(usage)
            assert isinstance(module.output_text(chunk), str)
        if start is not None:
            assert usage is not None  # a chunk without counts never forgets the earlier ones
    for chunk in stream:
        assert_usage(usage_from_invocation_metrics(chunk))


event_types = st.one_of(
    st.sampled_from(sorted({event_type for event_type, _ in converse_events()})), st.text(max_size=20)
)


@PROPERTY
@given(event_type=event_types, payload=documents([payload for _, payload in converse_events()]))
def test_converse_event_readers(event_type: str, payload: dict[str, Any]) -> None:
    assert_usage(converse.usage_from_event(event_type, payload))
    assert isinstance(converse.output_text(event_type, payload), str)
    assert isinstance(converse.delta_text(payload), str)


_HEADER_NAMES = (INPUT_TOKENS_HEADER, OUTPUT_TOKENS_HEADER, CACHE_READ_TOKENS_HEADER, CACHE_WRITE_TOKENS_HEADER)
header_names = st.one_of(
    st.builds(lambda name, spell: spell(name), st.sampled_from(_HEADER_NAMES),
              st.sampled_from([str.lower, str.upper, str.title, str.swapcase])),
    st.sampled_from(("content-type", "x-amzn-requestid")),
)
# httpx decodes header values as latin-1: any of its 256 characters can arrive.
header_values = st.one_of(st.sampled_from(COUNT_STRINGS), st.text(alphabet=st.characters(max_codepoint=255)))


@fuzz(150)
@given(st.dictionaries(header_names, header_values, max_size=6))
@example({"X-Amzn-Bedrock-Input-Token-Count": "\xb2"})  # latin-1 "²"
def test_usage_from_headers(headers: dict[str, str]) -> None:
    assert_usage(usage_from_headers(headers))


_MODELS = ("anthropic.claude-3-haiku-20240307-v1:0", "amazon.nova-lite-v1:0", "meta.llama3-8b-instruct-v1:0",
           "amazon.titan-text-express-v1", "cohere.command-r-v1:0", "mistral.mistral-large-2407-v1:0",
           "openai.gpt-oss-20b-1:0", "ai21.jamba-1-5-mini-v1:0", "us.deepseek.r1-v1:0", "writer.palmyra-x5-v1:0")
response_bytes = st.one_of(
    bodies.map(lambda body: repr(body).encode()),  # mostly not JSON: Python reprs
    bodies.map(lambda body: json.dumps(body).encode()),
    st.binary(max_size=200),
)


@PROPERTY
@given(
    operation=st.sampled_from(["InvokeModel", "Converse", "CountTokens"]),
    model_id=st.sampled_from(_MODELS),
    request=st.one_of(documents(request_seeds()).map(lambda body: json.dumps(body).encode()),
                      st.binary(max_size=100)),
    body=response_bytes,
    status=st.sampled_from([200, 400, 500]),
    headers=st.dictionaries(header_names, header_values, max_size=4),
)
def test_body_watcher_always_meters(
    operation: str, model_id: str, request: bytes, body: bytes, status: int, headers: dict[str, str]
) -> None:
    watcher = BodyUsageWatcher(operation, model_id, request, max_bytes=4096)
    watcher.feed(body)
    assert_usage(watcher.finish(status, headers), optional=False)


_OPTIONAL_COUNTS = st.none() | st.integers(min_value=0, max_value=10**9)
_OPTIONAL_TEXT = st.none() | st.sampled_from(["", "priority", "flex", "optimized"])


@PROPERTY
@given(usage=st.builds(Usage, _OPTIONAL_COUNTS.map(lambda n: n or 0), st.integers(0, 10**9),
                       st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**9),
                       st.integers(0, 10**9), st.booleans(), _OPTIONAL_TEXT, _OPTIONAL_TEXT),
       changes=st.fixed_dictionaries({}, optional={
           "input_tokens": _OPTIONAL_COUNTS, "output_tokens": _OPTIONAL_COUNTS,
           "cache_read_tokens": _OPTIONAL_COUNTS, "cache_write_tokens": _OPTIONAL_COUNTS,
           "speech_input_tokens": _OPTIONAL_COUNTS, "speech_output_tokens": _OPTIONAL_COUNTS,
           "estimated": st.none() | st.booleans(), "service_tier": _OPTIONAL_TEXT, "latency": _OPTIONAL_TEXT}))
def test_merged_is_replace_of_the_fields_given(usage: Usage, changes: dict[str, Any]) -> None:
    """`Usage.merged` spells out the copy `dataclasses.replace` makes: it must name every
    field (one added to `Usage` and not to `merged` would be silently dropped)."""
    expected = dataclasses.replace(usage, **{k: v for k, v in changes.items() if v is not None})
    assert usage.merged(**changes) == expected
    assert {f.name for f in dataclasses.fields(Usage)} == {
        "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "speech_input_tokens",
        "speech_output_tokens", "estimated", "service_tier", "latency"}


_COUNT_VALUES = st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True) | st.sampled_from(COUNT_STRINGS)
_CLAUDE_USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


@PROPERTY
@given(usage=st.none() | st.builds(Usage, st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6),
                                    st.integers(0, 10**6), estimated=st.booleans(), service_tier=_OPTIONAL_TEXT),
       kind=st.sampled_from(["message_start", "message_delta"]),
       counts=st.fixed_dictionaries({}, optional=dict.fromkeys(_CLAUDE_USAGE_KEYS, _COUNT_VALUES)),
       metrics=st.fixed_dictionaries({}, optional=dict.fromkeys(
           ("inputTokenCount", "outputTokenCount", "cacheReadInputTokenCount", "cacheWriteInputTokenCount"),
           _COUNT_VALUES)))
def test_claude_chunk_readers_match_the_field_by_field_reading(
    usage: Usage | None, kind: str, counts: dict[str, Any], metrics: dict[str, Any]
) -> None:
    """Issue #20 reads a Claude chunk's counts with `token_count(x.get(key))` and builds
    the `Usage` by position: the same `Usage` as the keyword spelling it replaced
    (`first_count` per key, `(usage or Usage()).merged(**update)`)."""
    def count(source: dict[str, Any], key: str) -> int | None:
        return token_count(source.get(key))

    chunk: dict[str, Any] = {"type": kind, "amazon-bedrock-invocationMetrics": metrics}
    if kind == "message_start":
        chunk["message"] = {"usage": counts}
        found = [count(counts, key) for key in _CLAUDE_USAGE_KEYS]
        expected = usage if all(n is None for n in found) else Usage(*(n or 0 for n in found))
    else:
        chunk["usage"] = counts
        update = dict(zip(("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"),
                          (count(counts, key) for key in _CLAUDE_USAGE_KEYS), strict=True))
        expected = usage if all(n is None for n in update.values()) else (usage or Usage()).merged(**update)
    assert FAMILIES["anthropic"].usage_from_chunk(chunk, usage) == expected
    found = [count(metrics, key) for key in metrics and (
        "inputTokenCount", "outputTokenCount", "cacheReadInputTokenCount", "cacheWriteInputTokenCount")]
    assert usage_from_invocation_metrics(chunk) == (
        None if all(n is None for n in found) else Usage(*(n or 0 for n in found)))
