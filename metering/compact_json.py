"""Compact JSON text of a journal line or an access-log line, at the hot path's price.

`json.JSONEncoder.encode` builds a new C encoder (and a closure) on every call; for
the one small record per request that the journal and the access log each write,
that set-up costs as much as a third of the encoding (issue #20). `compact` makes
the C encoder once and calls it: the text is `json.dumps(value, separators=(",", ":"))`
to the byte (ASCII, `NaN`/`Infinity` as `json` writes them; tests/metering/
test_compact_json.py checks it against `json.dumps`). Without the C extension it is
`json.dumps` itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _json_encoder
from typing import Any

__all__ = ["compact"]

_PLAIN = json.JSONEncoder(separators=(",", ":"))


def _unserializable(value: Any) -> Any:
    return _PLAIN.default(value)  # raises TypeError, as json.dumps does


def _make() -> Callable[[Any], str]:
    make_encoder = getattr(_json_encoder, "c_make_encoder", None)  # the C extension, if built
    if make_encoder is None:
        return _PLAIN.encode
    # (markers, default, encoder, indent, key separator, item separator, sort_keys, skipkeys, allow_nan):
    # what `JSONEncoder.iterencode` passes for separators=(",", ":") and the other defaults, less
    # the circular-reference check (a record is a flat dict of the proxy's own values).
    encode = make_encoder(None, _unserializable, _json_encoder.encode_basestring_ascii, None, ":", ",",
                          False, False, True)
    join = "".join

    def compact(value: Any) -> str:
        return join(encode(value, 0))

    return compact


#: `json.dumps(value, separators=(",", ":"))`, without building an encoder per call.
compact: Callable[[Any], str] = _make()
