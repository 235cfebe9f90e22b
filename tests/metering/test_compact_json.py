"""`compact` writes exactly what `json.dumps(…, separators=(",", ":"))` writes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metering.compact_json import compact

_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text()
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                       | st.lists(inner, max_size=4).map(tuple)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@given(_VALUES)
def test_compact_is_json_dumps_to_the_byte(value: Any) -> None:
    assert compact(value) == json.dumps(value, separators=(",", ":"))


def test_a_value_json_cannot_write_raises_as_json_dumps_does() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        compact({"a": object()})
