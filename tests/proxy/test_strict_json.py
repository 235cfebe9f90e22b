"""`proxy.strict_json.loads` keeps one decoder for its fast path (issue #20): it must read
every input as `json.loads` with the same hooks does (the same value, the same error)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.strict_json import BadNumber, _finite, _refuse, loads

_documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10)


def _outcome(parse: Any, data: bytes | str) -> tuple[str, Any]:
    try:
        return "value", parse(data)
    except BadNumber:
        return "refused", None
    except Exception as exc:
        return "error", type(exc).__name__


def _reference(data: bytes | str) -> Any:
    try:
        return json.loads(data, parse_constant=_refuse, parse_float=_finite)
    except Exception as exc:
        if type(exc).__name__ == "_Refused":
            raise BadNumber("", "") from None
        raise


@settings(max_examples=300)
@given(document=_documents, encoding=st.sampled_from(["utf-8", "utf-16", "utf-32", "utf-8-sig"]),
       as_text=st.booleans())
def test_documents_read_as_json_loads_reads_them(document: Any, encoding: str, as_text: bool) -> None:
    text = json.dumps(document)
    data: bytes | str = text if as_text else text.encode(encoding)
    assert _outcome(loads, data) == _outcome(_reference, data)


@settings(max_examples=300)
@given(data=st.one_of(st.binary(max_size=30), st.text(max_size=30)))
@example(data="\ufeff{}")
@example(data=b'{"a": NaN}')
@example(data=b'{"a": 1e400}')
def test_any_input_fails_or_reads_as_json_loads_does(data: bytes | str) -> None:
    assert _outcome(loads, data) == _outcome(_reference, data)
