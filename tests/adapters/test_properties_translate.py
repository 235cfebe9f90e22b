"""Properties of cross-family translation (issue #9) on hostile bodies.

`adapters.translate` documents one error, `TranslationError` (naming the family
and the field), and `proxy.admission` catches only that one: any other
exception from a client's body would be a 500. What translation returns must
serialize (`json.dumps`), leave the caller's document as it was, and be a body
the target family's own reader accepts; a translated response keeps the usage.
"""

from __future__ import annotations

import json
from itertools import product
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from adapters import FAMILIES
from adapters.translate import (
    TranslationError,
    can_translate,
    translate_converse_request,
    translate_request,
    translate_response,
)
from adapters.translate_stream import translator_of
from adapters.usage import Usage
from tests.adapters.grammars import REQUESTS, RESPONSES
from tests.adapters.strategies import (
    assert_usage,
    body_seeds,
    documents,
    fuzz,
    nested_json,
    request_seeds,
)
from tests.adapters.test_translate import CHAT, CONVERSE, TOOLS
from tests.adapters.test_translate_stream import MODEL_IDS

TRANSLATING = ("anthropic", "nova", "llama")
PAIRS = list(product(TRANSLATING, repeat=2))
_REQUESTS = {
    family: st.one_of(
        documents(request_seeds(family, CHAT[family], *([TOOLS[family]] if family in TOOLS else []))),
        REQUESTS[family],
    )
    for family in TRANSLATING
}
_RESPONSES = st.one_of(documents(body_seeds()), *RESPONSES.values())


def _refused(exc: TranslationError, *families: str) -> None:
    assert exc.family in families and isinstance(exc.field, str) and exc.reason


def _depth(value: Any) -> int:
    stack, deepest = [(value, 1)], 0
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(node, dict):
            stack.extend((child, level + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, level + 1) for child in node)
    return deepest


_TOOL_SPEC_IN_A_MESSAGE = {
    "messages": [{"role": "user", "content": [{"toolSpec": {"name": "f", "inputSchema": {"json": {}}}}]}]
}
request_cases = st.sampled_from(PAIRS).flatmap(
    lambda pair: st.tuples(st.just(pair[0]), st.just(pair[1]), _REQUESTS[pair[0]])
)


@fuzz(200)
@given(case=request_cases)
# A `toolSpec` among a message's blocks became a neutral `Tool` that the Claude
# and Llama writers crashed on (AttributeError).
@example(case=("nova", "anthropic", _TOOL_SPEC_IN_A_MESSAGE))
@example(case=("nova", "llama", _TOOL_SPEC_IN_A_MESSAGE))
# A `media_type` that is not a string was looked up in a frozenset: TypeError, unhashable.
@example(case=("anthropic", "nova", {"messages": [{"role": "user", "content": [
    {"type": "image", "source": {"type": "base64", "media_type": ["image/png"], "data": ""}}]}]}))
def test_translate_request(case: tuple[str, str, dict[str, Any]]) -> None:
    source, target, body = case
    snapshot = json.dumps(body)
    try:
        out = translate_request(source, target, body)
    except TranslationError as exc:
        _refused(exc, source, target)
        return
    finally:
        assert json.dumps(body) == snapshot  # the client's document is not touched
    json.dumps(out)
    if source != target:
        translator_of(target).request_to_neutral(out)  # what we wrote, we can read


@fuzz(150)
@given(pair=st.sampled_from(PAIRS), body=_RESPONSES)
def test_translate_response_keeps_the_usage(pair: tuple[str, str], body: dict[str, Any]) -> None:
    source, target = pair
    snapshot = json.dumps(body)
    try:
        out = translate_response(source, target, body, MODEL_IDS[source])
    except TranslationError as exc:
        _refused(exc, source, target)
        return
    finally:
        assert json.dumps(body) == snapshot
    json.dumps(out)
    read = FAMILIES[source].usage_from_body(out)
    assert_usage(read)
    billed = FAMILIES[target].usage_from_body(body) or Usage()
    assert (read or Usage()).total_tokens == billed.total_tokens


_CONVERSE_TARGETS = (*MODEL_IDS.values(), "mistral.mistral-large-2407-v1:0", "arn:aws:bedrock:us-east-1:1:"
                     "application-inference-profile/abc", "")
converse_requests = documents(request_seeds("converse", CONVERSE))


@fuzz(150)
@given(body=converse_requests, target=st.one_of(st.sampled_from(_CONVERSE_TARGETS), st.text(max_size=30)))
@example(body={"additionalModelRequestFields": {"top_k": 5, "inferenceConfig": "x"}}, target="amazon.nova-lite-v1:0")
@example(body={"additionalModelRequestFields": {"top_k": 5, "inferenceConfig": [1]}}, target="amazon.nova-lite-v1:0")
@example(body={"messages": 5}, target="amazon.nova-lite-v1:0")
def test_translate_converse_request(body: dict[str, Any], target: str) -> None:
    snapshot = json.dumps(body)
    try:
        out = translate_converse_request(body, target)
    except TranslationError as exc:
        _refused(exc, "converse")
        return
    finally:
        assert json.dumps(body) == snapshot
    json.dumps(out)
    assert _depth(out) <= _depth(body) + 1  # nothing nested deeper than the client sent


def _deep_requests(deep: Any) -> dict[str, dict[str, Any]]:
    """A client's deep JSON where each family's request may carry any JSON."""
    return {
        "anthropic": {"messages": [{"role": "assistant", "content": [
            {"type": "tool_use", "id": "t", "name": "f", "input": {"deep": deep}}]}], "tool_choice": None},
        "nova": {"messages": [{"role": "user", "content": [
            {"toolResult": {"toolUseId": "t", "content": [{"json": deep}]}}]}]},
        "llama": {"prompt": "hi", "temperature": 0.5},
    }


@fuzz(10, deadline=None)
@given(depth=st.integers(min_value=1, max_value=700), path=st.sampled_from([("[",), ("content", "["), ("json",)]))
@example(depth=700, path=("[",))  # copy.deepcopy recursed twice per level: RecursionError
def test_deep_bodies_translate(depth: int, path: tuple[str, ...]) -> None:
    """As deep as `json.loads` goes in the proxy (Hypothesis cannot print such examples)."""
    deep = nested_json(depth, path)
    converse = {"messages": deep, "system": deep, "toolConfig": {"tools": deep},
                "additionalModelRequestFields": {"top_k": deep, "inferenceConfig": deep}}
    for target in _CONVERSE_TARGETS:
        json.dumps(translate_converse_request(converse, target))
    requests = _deep_requests(deep)
    for source, target in PAIRS:
        try:
            json.dumps(translate_request(source, target, requests[source]))
        except TranslationError as exc:
            _refused(exc, source, target)
    response = {"content": [{"type": "tool_use", "id": "t", "name": "f", "input": deep}], "stop_reason": "tool_use"}
    for source in TRANSLATING:
        json.dumps(translate_response(source, "anthropic", response, MODEL_IDS[source]))


@fuzz(100)
@given(st.one_of(st.sampled_from((*sorted(FAMILIES), "converse")), st.text(max_size=12)),
       st.one_of(st.sampled_from(sorted(FAMILIES)), st.text(max_size=12)))
def test_can_translate_answers_for_any_names(source: str, target: str) -> None:
    assert isinstance(can_translate(source, target), bool)
    try:
        translator_of(source)
    except TranslationError as exc:
        _refused(exc, source)
