"""Hypothesis strategies for hostile Bedrock JSON (issue #9), shared by the
`test_properties_*` modules.

Two sources of documents: the recorded bodies, requests and stream chunks of
`tests/fixtures/bedrock/` (plus hand-written shapes for families without a
recording) with a few subtrees swapped for junk, junk fields added or blocks
moved; and junk built from scratch out of the field names the adapters read
(`grammars` has typed request and response shapes for the translating families). Junk is what a
broken upstream or a hostile client could send: numbers where counts go that
are negative, huge, floats, NaN or booleans; numeric-looking strings; nulls;
wrong container types; deep nesting.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from functools import cache
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from adapters import family_of
from adapters.headers import INVOCATION_METRICS_KEY
from adapters.usage import Usage
from tests.adapters.cassettes import FIXTURES, load, stream_events

__all__ = [
    "FIELD_NAMES", "COUNT_STRINGS", "leaves", "json_values", "json_objects", "deep_values", "nested_json",
    "sometimes", "documents",
    "body_seeds", "chunk_seeds", "request_seeds", "converse_events", "fuzz", "assert_usage",
]

#: Every key some adapter reads (and a few it must ignore).
FIELD_NAMES = (
    "usage", "input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
    "type", "message", "delta", "text", "partial_json", "thinking", "completion", "index", "content_block",
    "stop_reason", "stop_sequence", "inputTokens", "outputTokens", "totalTokens", "cacheReadInputTokens",
    "cacheReadInputTokenCount", "cacheWriteInputTokens", "cacheWriteInputTokenCount", "metadata",
    "messageStart", "contentBlockStart", "contentBlockDelta", "contentBlockStop", "contentBlockIndex",
    "messageStop", "stopReason", "start", "toolUse", "toolUseId", "name", "input", "reasoningContent",
    "reasoningText", "signature", "redactedContent", "prompt_token_count", "generation_token_count",
    "generation", "inputTextTokenCount", "results", "tokenCount", "totalOutputTextTokenCount", "outputText",
    "completionReason", "outputs", "choices", "prompt_tokens", "completion_tokens", "total_tokens", "meta",
    "billed_units", "tokens", "response", "is_finished", "generations", "completions", "data", "content",
    "reasoning_content", INVOCATION_METRICS_KEY, "inputTokenCount", "outputTokenCount", "messages", "role",
    "system", "max_tokens", "max_tokens_to_sample", "max_completion_tokens", "temperature", "top_p", "top_k",
    "stop_sequences", "tools", "tool_choice", "input_schema", "description", "cache_control", "source",
    "media_type", "tool_use_id", "is_error", "id", "output_format", "prompt", "images", "max_gen_len",
    "inferenceConfig", "maxTokens", "max_new_tokens", "topP", "topK", "stopSequences", "toolConfig",
    "toolChoice", "toolSpec", "inputSchema", "json", "cachePoint", "image", "format", "bytes", "toolResult",
    "status", "auto", "any", "tool", "output", "schemaVersion", "additionalModelRequestFields",
    "additionalModelResponseFieldPaths", "textGenerationConfig", "maxTokenCount", "inputText", "texts",
)
#: String values the adapters compare against.
_ENUM_STRINGS = (
    "message_start", "message_delta", "message_stop", "content_block_start", "content_block_delta",
    "content_block_stop", "text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking",
    "text_delta", "input_json_delta", "custom", "tool", "auto", "any", "none", "user", "assistant", "system",
    "base64", "image/png", "image/jpeg", "png", "jpeg", "end_turn", "max_tokens", "stop", "length", "error",
    "refusal", "guardrail_intervened", "content_filtered", "ephemeral", "default", "chunk", "event",
    "<|begin_of_text|>", "<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>",
    "<|start_header_id|>ipython<|end_header_id|>\n\n", "<|start_header_id|>assistant<|end_header_id|>\n\n",
)
#: Counts spelled as strings: fine, padded, negative, non-ASCII digits, overflowing, not numbers.
COUNT_STRINGS = ("12", " 7 ", "0", "-3", "12.5", "28.0", "1e400", "nan", "inf", "1_000", "²", "٣", "1" * 5000, "")
#: Counts Bedrock could never send, but a broken or hostile peer could.
_ODD_NUMBERS = (0, -1, 1, 2**31, 2**63, 10**100, -0.0, 28.0, 0.5, 1e308, float("nan"), float("inf"), -float("inf"))

keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8))
strings = st.one_of(st.sampled_from(_ENUM_STRINGS + COUNT_STRINGS + FIELD_NAMES), st.text(max_size=30))
numbers = st.one_of(
    st.sampled_from(_ODD_NUMBERS), st.integers(), st.integers(min_value=-(2**80), max_value=2**80), st.floats()
)
leaves = st.one_of(st.none(), st.booleans(), numbers, strings)
json_values = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4), max_leaves=8
)
json_objects = st.dictionaries(keys, json_values, max_size=5)


def _nested(value: Any, path: Sequence[str], depth: int) -> Any:
    for level in range(depth):
        key = path[level % len(path)]
        value = [value] if key == "[" else {key: value}
    return value


#: A value under up to 200 levels of lists and real fields. Deeper is real too
#: (`json.loads` parses about 900 levels), but Hypothesis cannot print a failing
#: example that deep: `nested_json` builds those inside a test.
deep_values = st.builds(
    _nested, leaves, st.lists(st.sampled_from((*FIELD_NAMES[:40], "[")), min_size=1, max_size=3),
    st.integers(min_value=20, max_value=200),
)


def nested_json(depth: int, path: Sequence[str] = ("[",)) -> Any:
    """`depth` levels of `path` ("[" a list, else a key) around a null, parsed by
    `json.loads` as the proxy parses a body."""
    keys = [path[level % len(path)] for level in range(depth)]
    opening = "".join("[" if key == "[" else "{" + json.dumps(key) + ":" for key in keys)
    closing = "".join("]" if key == "[" else "}" for key in reversed(keys))
    return json.loads(opening + "null" + closing)


@st.composite
def sometimes(draw: st.DrawFn, usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], one_in: int) -> Any:
    """`usual`, or `rare` about once in `one_in` draws (`st.one_of` cannot weight:
    it drops repeated strategies)."""
    return draw(rare if draw(st.integers(min_value=1, max_value=one_in)) == (one_in + 1) // 2 else usual)


junk = sometimes(json_values, deep_values, 5)


def _slots(document: Any) -> list[tuple[Any, Any]]:
    """(container, key or index) of every node under the root, and one new field per object."""
    out: list[tuple[Any, Any]] = []
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            out.append((node, None))
            out.extend((node, key) for key in node)
            stack.extend(node.values())
        elif isinstance(node, list):
            out.extend((node, index) for index in range(len(node)))
            stack.extend(node)
    return out


def _nodes(document: Any) -> list[Any]:
    out, stack = [], [document]
    while stack:
        node = stack.pop()
        out.append(node)
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def _pick(draw: st.DrawFn, items: Sequence[Any]) -> Any:
    # An index, not `st.sampled_from`: that one hashes every element on each draw.
    return items[draw(st.integers(min_value=0, max_value=len(items) - 1))]


def _retype(document: Any, key: str, value: Any) -> None:
    for node in _nodes(document):
        if isinstance(node, dict) and key in node:
            node[key] = copy.deepcopy(value)


@st.composite
def _mutated(draw: st.DrawFn, seeds: Sequence[Any], blocks: Sequence[dict[str, Any]]) -> Any:
    """A seed with up to three changes: a node replaced by junk or a field added;
    every value of one field name replaced (a wrong type wherever it occurs); or a
    block (an object in a list: message, content block, tool) from any seed put
    into a list where it may not belong."""
    document = copy.deepcopy(_pick(draw, seeds))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        change = draw(st.integers(min_value=0, max_value=3))
        if change == 3 and blocks:
            lists = [node for node in _nodes(document) if isinstance(node, list)]
            if lists:
                target = _pick(draw, lists)
                index = draw(st.integers(min_value=0, max_value=len(target)))
                target.insert(index, copy.deepcopy(_pick(draw, blocks)))
                continue
        if change == 2:
            names = sorted({key for node in _nodes(document) if isinstance(node, dict) for key in node})
            if names:
                _retype(document, _pick(draw, names), draw(junk))
                continue
        slots = _slots(document)
        if not slots:
            break
        container, key = _pick(draw, slots)
        container[_pick(draw, FIELD_NAMES) if key is None else key] = draw(junk)
    return document


def documents(seeds: Sequence[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A seed with junk swapped in (mostly), or a junk object with real field names."""
    blocks = [item for seed in seeds for node in _nodes(seed) if isinstance(node, list)
              for item in node if isinstance(item, dict)]
    return sometimes(_mutated(seeds, blocks), json_objects, 3)


# --- seeds ----------------------------------------------------------------------------

_METRICS = {INVOCATION_METRICS_KEY: {"inputTokenCount": 5, "outputTokenCount": 7, "invocationLatency": 9,
                                     "firstByteLatency": 3, "cacheReadInputTokenCount": 0}}
_OPENAI_USAGE = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
#: Shapes documented but not recorded (module docstrings, BEDROCK_WIRE.md §4).
_WRITTEN_BODIES = [
    {"choices": [{"message": {"content": "hi", "reasoning_content": "r"}, "stop_reason": "stop"}],
     "usage": _OPENAI_USAGE},
    {"completions": [{"data": {"text": "hi"}}]},
    {"outputs": [{"text": "hi", "stop_reason": "stop"}]},
    {"choices": [{"text": "hi", "stop_reason": "stop"}]},
    {"text": "hi", "meta": {"billed_units": {"input_tokens": 5, "output_tokens": 7},
                            "tokens": {"input_tokens": 9, "output_tokens": 7}}},
]
_WRITTEN_CHUNKS = [
    {"choices": [{"delta": {"content": "x"}}]},
    {"choices": [], "usage": _OPENAI_USAGE, **_METRICS},
    {"outputs": [{"text": "x", "stop_reason": None}]},
    {"completions": [{"data": {"text": "x"}}]},
    {"is_finished": True, "event_type": "stream-end", "response": {"meta": {"billed_units": {"input_tokens": 5}}}},
]


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


@cache
def _recorded() -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {"body": [], "chunk": [], "request": [], "converse_request": [],
                                   "converse_response": [], "converse_event": []}
    for path in sorted(FIXTURES.rglob("*.yaml")):
        for item in load(str(path.relative_to(FIXTURES))):
            converse = item.operation.startswith("Converse")
            request = _json_object(item.request_body)
            if request is not None:
                found["converse_request" if converse else "request"].append((family_of(item.model_id), request))
            if item.is_event_stream:
                for event_type, payload in stream_events(item):
                    found["converse_event" if converse else "chunk"].append((event_type, payload))
            elif item.status == 200 and (body := _json_object(item.body)) is not None:
                found["converse_response" if converse else "body"].append(body)
    return found


def body_seeds() -> list[dict[str, Any]]:
    """Every recorded InvokeModel / Converse response body, and the documented shapes."""
    recorded = _recorded()
    return [*recorded["body"], *recorded["converse_response"], *_WRITTEN_BODIES]


def chunk_seeds() -> list[dict[str, Any]]:
    """Every recorded InvokeModelWithResponseStream chunk, and the documented shapes."""
    return [chunk for _, chunk in _recorded()["chunk"]] + _WRITTEN_CHUNKS


def converse_events() -> list[tuple[str, dict[str, Any]]]:
    return list(_recorded()["converse_event"])


def request_seeds(family: str | None = None, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Recorded InvokeModel requests of one family (all if None); "converse" for Converse."""
    kind = "converse_request" if family == "converse" else "request"
    own = [body for owner, body in _recorded()[kind] if family in (None, "converse", owner)]
    return [*own, *extra]


# --- settings and checks ----------------------------------------------------------------


def fuzz(examples: int, deadline: int | None = 2000) -> settings:
    """The deadline only turns a hang into a failure. Drawing these documents is
    slow by Hypothesis' standards (and slower on a busy CI box): no too_slow check."""
    return settings(max_examples=examples, deadline=deadline, suppress_health_check=[HealthCheck.too_slow])


_COUNTS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def assert_usage(usage: object, *, optional: bool = True) -> None:
    """A `Usage` of non-negative ints (never bool or float), or None where allowed."""
    if usage is None and optional:
        return
    assert isinstance(usage, Usage), usage
    for name in _COUNTS:
        value = getattr(usage, name)
        assert type(value) is int and value >= 0, (name, value)
    assert type(usage.estimated) is bool
