"""Properties of the request-side readers (issue #9): token estimates and the
max-output-tokens cap read client bodies, which a client controls entirely.

Neither module documents an error: `adapters.estimate` answers for any bytes
(invalid UTF-8, deep nesting, no JSON at all), and `adapters.maxtokens` for any
JSON object `proxy.admission` hands it, and the cap it writes is what the
request then carries.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from adapters.estimate import (
    estimate_output_tokens,
    estimate_tokens,
    estimate_usage,
    request_text_bytes,
    response_text_chars,
)
from adapters.maxtokens import _PATHS, clamp_max_output_tokens, max_output_tokens
from tests.adapters.strategies import assert_usage, body_seeds, documents, fuzz, request_seeds

PROPERTY = fuzz(100)
requests = documents(request_seeds() + request_seeds("converse"))


def _encoded(document: Any, ascii_only: bool) -> bytes:
    # Without ensure_ascii a lone surrogate becomes bytes that are not UTF-8.
    return json.dumps(document, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


request_bytes = st.one_of(
    st.builds(_encoded, requests, st.booleans()),
    st.builds(_encoded, documents(body_seeds()), st.booleans()),
    st.binary(max_size=300),
    st.sampled_from([b"", b"null", b"[]", b'"text"', b"1" * 5000, b"[" * 100_000, b'{"prompt": ' * 50_000]),
)
byte_kinds = st.sampled_from([bytes, bytearray, memoryview])


@PROPERTY
@given(body=request_bytes, kind=byte_kinds, generated=st.integers(min_value=-10, max_value=10**9))
@example(body=b"[" * 100_000, kind=bytes, generated=0)  # RecursionError in json.loads, not a ValueError
def test_estimates_are_counts_for_any_bytes(body: bytes, kind: type, generated: int) -> None:
    data = kind(body)
    for size in (request_text_bytes(data), response_text_chars(data), estimate_tokens(data)):
        assert type(size) is int and 0 <= size <= len(body)
    assert (estimate_tokens(data) > 0) == (len(body) > 0)
    usage = estimate_usage(data, generated)
    assert_usage(usage, optional=False)
    assert usage.estimated
    assert type(estimate_output_tokens(generated)) is int


@PROPERTY
@given(st.text())
def test_estimate_tokens_of_any_text(text: str) -> None:
    size = len(text.encode("utf-8", "surrogatepass"))
    assert estimate_tokens(text) == -(-size // 4)


families = st.one_of(st.sampled_from(sorted(_PATHS)), st.text(max_size=10))
caps = st.integers(min_value=1, max_value=200_000)


@fuzz(100)
@given(family=families, document=requests, cap=caps)
@example(family="nova", document={"inferenceConfig": [1, 2]}, cap=512)
@example(family="anthropic", document={"max_tokens": True, "max_tokens_to_sample": 10**100}, cap=512)
def test_clamp_caps_the_request_and_reports_a_change(family: str, document: dict[str, Any], cap: int) -> None:
    before = max_output_tokens(family, document)
    assert before is None or (type(before) is int and before > 0)
    snapshot = json.dumps(document)
    changed = clamp_max_output_tokens(family, document, cap)
    assert changed == (json.dumps(document) != snapshot)
    after = max_output_tokens(family, document)
    if before is not None:
        assert after == min(before, cap)
    else:  # None only if the request keeps a non-positive count, which Bedrock refuses
        assert after in (None, cap)
    assert not clamp_max_output_tokens(family, document, cap)  # idempotent
