"""The input-token upper bound (adapters/input_bound.py): above what Bedrock billed for every
recorded request, above what the simulator counts for any request, never raising."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters import family_of
from adapters.input_bound import (
    IMAGE_TOKENS,
    MAX_DOCUMENT_TOKENS,
    PDF_MAX_PAGES,
    PDF_PAGE_TOKENS,
    VIDEO_TOKENS,
    input_token_bound,
)
from adapters.modelid import base_model_id
from adapters.watch import BodyUsageWatcher, StreamUsageWatcher
from proxy.routing import Operation
from simulator import anthropic as sim_anthropic
from simulator import converse as sim_converse
from simulator import nova as sim_nova
from simulator.generate import MEDIA_TOKENS
from tests.adapters.cassettes import FIXTURES, load
from tests.adapters.grammars import REQUESTS
from tests.adapters.strategies import fuzz

#: Recordings whose request body is not the one Bedrock billed: openllmetry's prompt-cache test
#: sent an 18,000-token system prompt and recorded it as "very very long system prompt".
_EDITED = frozenset({"openllmetry/test_prompt_cache.yaml#1", "openllmetry/test_prompt_cache.yaml#2"})
_RECORDED = [item for path in sorted(FIXTURES.rglob("*.yaml"))
             for item in load(str(path.relative_to(FIXTURES)))
             if item.status == 200 and item.operation != "CountTokens" and item.request_body.startswith(b"{")
             and item.name not in _EDITED]


def _billed_input(item: Any) -> int | None:
    """Input + cache tokens Bedrock reported for a recorded response (None: it reported none)."""
    operation = Operation(item.operation)
    if item.is_event_stream:
        stream = StreamUsageWatcher(operation, item.model_id, item.request_body)
        stream.feed(item.body)
        usage = stream.finish()
    else:
        body = BodyUsageWatcher(operation, item.model_id, item.request_body, 10**7)
        body.feed(item.body)
        usage = body.finish(item.status, item.headers)
    if usage.estimated:
        return None
    return usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens


@pytest.mark.parametrize("item", _RECORDED, ids=lambda item: item.name)
def test_the_bound_is_above_what_bedrock_billed(item: Any) -> None:
    billed = _billed_input(item)
    if billed is None:
        pytest.skip("no usage reported in this recording")
    bound = input_token_bound(json.loads(item.request_body), family_of(base_model_id(item.model_id)))
    assert bound >= billed, (bound, billed)


def test_recordings_were_checked() -> None:
    assert len(_RECORDED) >= 20


@fuzz(300)
@given(st.data())
def test_the_bound_is_above_what_the_simulator_counts(data: st.DataObject) -> None:
    family = data.draw(st.sampled_from(["anthropic", "nova"]))
    body = data.draw(REQUESTS[family])
    parse = sim_anthropic.parse_request if family == "anthropic" else sim_nova.parse_request
    try:
        prompt = parse(body)
    except Exception:  # the simulator refuses it as Bedrock would: nothing is billed
        return
    assert input_token_bound(body, family) >= prompt.tokens


def test_text_counts_its_utf8_bytes_not_its_json() -> None:
    text = "naïve 日本語 " * 50
    body = {"messages": [{"role": "user", "content": [{"text": text}]}]}
    bound = input_token_bound(body, "nova")
    assert len(text.encode()) <= bound <= len(text.encode()) + 200
    assert bound < len(json.dumps(body))  # \\u escapes are not counted


def test_media_take_their_documented_formulas() -> None:
    image = {"image": {"format": "png", "source": {"bytes": base64.b64encode(b"\x89PNG" + b"\0" * 5_000).decode()}}}
    for family, tokens in IMAGE_TOKENS.items():
        body = {"messages": [{"role": "user", "content": [image]}]}
        assert tokens <= input_token_bound(body, family) <= tokens + 200  # not the base64's size
    video = {"video": {"format": "mp4", "source": {"s3Location": {"uri": "s3://bucket/clip.mp4"}}}}
    assert input_token_bound({"messages": [{"role": "user", "content": [video]}]}, "nova") >= VIDEO_TOKENS
    assert MEDIA_TOKENS <= min(IMAGE_TOKENS.values())


def _document(fmt: str, data: bytes) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [
        {"document": {"format": fmt, "name": "doc", "source": {"bytes": base64.b64encode(data).decode()}}}]}]}


def test_documents_by_format() -> None:
    three_pages = b"%PDF-1.4\n" + b"".join(b"1 0 obj << /Type /Page /Parent 2 0 R >>\n" for _ in range(3))
    assert 3 * PDF_PAGE_TOKENS <= input_token_bound(_document("pdf", three_pages), "anthropic") < 4 * PDF_PAGE_TOKENS
    counted = b"%PDF-1.7\n2 0 obj << /Type /Pages /Kids [] /Count 12 >>\n"
    assert input_token_bound(_document("pdf", counted), "anthropic") >= 12 * PDF_PAGE_TOKENS
    opaque = b"%PDF-1.7\n" + bytes(range(256)) * 10  # object streams: no page found
    assert input_token_bound(_document("pdf", opaque), "anthropic") >= PDF_MAX_PAGES * PDF_PAGE_TOKENS
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", "<w:t>" + "words " * 20_000 + "</w:t>")
    data = packed.getvalue()
    assert input_token_bound(_document("docx", data), "nova") >= 120_000 > len(data)  # inflated size
    assert input_token_bound(_document("csv", b"a,b\n" * 100), "nova") >= 400
    in_s3 = {"messages": [{"role": "user", "content": [
        {"document": {"format": "pdf", "name": "d", "source": {"s3Location": {"uri": "s3://b/k"}}}}]}]}
    assert input_token_bound(in_s3, "nova") >= MAX_DOCUMENT_TOKENS


def test_tools_count_their_json_and_the_tool_prompt() -> None:
    tools = [{"toolSpec": {"name": f"tool{i}", "inputSchema": {"json": {"type": "object", "properties": {
        "a": {"type": "string"}, "b": {"type": "integer"}}}}}} for i in range(5)]
    plain = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    with_tools = {**plain, "toolConfig": {"tools": tools}}
    assert input_token_bound(with_tools, "anthropic") - input_token_bound(plain, "anthropic") >= len(json.dumps(tools))


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                                      max_size=4), max_leaves=30))
def test_never_raises(document: Any) -> None:
    assert input_token_bound(document, "anthropic") >= 0
    assert input_token_bound({"messages": [{"role": "user", "content": [{"document": document}]}]}, "nova") >= 0


def test_converse_bodies_too() -> None:
    body = {"system": [{"text": "Be brief."}], "messages": [
        {"role": "user", "content": [{"text": "What is in this image?"}, {"image": {
            "format": "png", "source": {"bytes": "AAAA"}}}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "look", "input": {"q": "x"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"json": {"seen": [1, 2]}}]}}]},
    ], "inferenceConfig": {"maxTokens": 100}}
    assert input_token_bound(body, "nova") >= sim_converse.prompt_from(body).tokens
