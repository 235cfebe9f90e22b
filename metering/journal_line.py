"""A usage event's journal line, written field by field rather than through a dict.

The journal line is `compact(event.to_record())` (metering/compact_json.py). Building
that dict and having the C encoder walk it, encoding all 26 keys again each time,
cost ≈ 12 µs a request on the bench machine, the largest part of recording an
event (issue #20). The keys and their order are fixed, so `journal_line` writes
the text with one f-string: ≈ 4 µs. The text is the same to the byte
(tests/metering/test_journal_line.py checks it against `compact` with hypothesis).

Only values of exactly the types the proxy puts in an event take that path: `str`,
`int`, finite `float`, `bool`, None where allowed, tags as pairs of `str`. Anything
else (a NaN latency, an int timestamp from a test, a str subclass…) takes
`compact(event.to_record())`, which writes what `json.dumps` would.
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii as _string

from metering.compact_json import compact
from metering.events import UsageEvent

__all__ = ["JSON_BOOLEAN", "journal_line", "json_number", "shared_parts", "usual"]

#: What `json` writes for a bool, and for a finite float (also proxy/eventlog.py's access line).
JSON_BOOLEAN = {True: "true", False: "false"}
json_number = float.__repr__


def _finite(value: object) -> bool:
    return type(value) is float and value - value == 0.0  # inf - inf and NaN - NaN are NaN


def usual(e: UsageEvent) -> bool:
    """Every value is of the type the fast path writes as `json` would (tags: a tuple, of
    whatever); proxy/eventlog.py's access line relies on it too."""
    return (_finite(e.timestamp) and _finite(e.latency_ms) and (e.first_byte_ms is None or _finite(e.first_byte_ms))
            and type(e.input_tokens) is type(e.output_tokens) is type(e.cache_read_tokens)
            is type(e.cache_write_tokens) is type(e.cost_pico_usd) is type(e.status) is type(e.reserved_pico_usd)
            is int
            and type(e.priced) is type(e.estimated) is type(e.cached) is type(e.hung_up) is bool
            and type(e.request_id) is type(e.org) is type(e.app) is type(e.operation) is type(e.requested_model)
            is type(e.model) is type(e.quota_scope) is type(e.quota_model) is type(e.lease) is type(e.service_tier)
            is type(e.latency) is str
            and type(e.tags) is tuple)


def _tags(tags: tuple[tuple[str, str], ...]) -> str | None:
    """`[["key","value"],…]`, or None if a tag is not a pair of `str`."""
    if not tags:
        return "[]"
    parts = []
    for pair in tags:
        if type(pair) is not tuple or len(pair) != 2 or type(pair[0]) is not str or type(pair[1]) is not str:
            return None
        parts.append(f"[{_string(pair[0])},{_string(pair[1])}]")
    return f"[{','.join(parts)}]"


#: The last event `shared_parts` looked at, and what it found: the access line of a request
#: (proxy/eventlog.py) asks for the same event right after its journal line.
_last: tuple[UsageEvent | None, tuple[str, ...] | None] = (None, None)


def shared_parts(e: UsageEvent) -> tuple[str, ...] | None:
    """None when `e` is not `usual`, else the JSON of what the journal line and the access
    line both write: timestamp, request id, org, app, operation, requested model, model.

    Remembered for the last event: checking an event and writing its timestamp (the
    shortest repr of a float) cost ≈ 1.5 µs, and each request's access line asked again
    what its journal line had just asked (issue #20). The event is immutable, and held
    while remembered, so `is` cannot mistake another event for it."""
    global _last
    last = _last
    if last[0] is e:
        return last[1]
    parts = (json_number(e.timestamp), _string(e.request_id), _string(e.org), _string(e.app), _string(e.operation),
             _string(e.requested_model), _string(e.model)) if usual(e) else None
    _last = (e, parts)
    return parts


def journal_line(e: UsageEvent) -> bytes:
    """`(compact(e.to_record()) + "\\n").encode()`, faster for the usual event."""
    parts = shared_parts(e)
    tags = None if parts is None else _tags(e.tags)
    if parts is None or tags is None:
        return (compact(e.to_record()) + "\n").encode()
    timestamp, request_id, org, app, operation, requested_model, model = parts
    first_byte = "null" if e.first_byte_ms is None else json_number(e.first_byte_ms)
    return (
        f'{{"request_id":{request_id},"timestamp":{timestamp},"org":{org},'
        f'"app":{app},"operation":{operation},'
        f'"requested_model":{requested_model},"model":{model},'
        f'"input_tokens":{e.input_tokens},"output_tokens":{e.output_tokens},'
        f'"cache_read_tokens":{e.cache_read_tokens},"cache_write_tokens":{e.cache_write_tokens},'
        f'"cost_pico_usd":{e.cost_pico_usd},"priced":{JSON_BOOLEAN[e.priced]},"latency_ms":{json_number(e.latency_ms)},'
        f'"first_byte_ms":{first_byte},"status":{e.status},"estimated":{JSON_BOOLEAN[e.estimated]},'
        f'"quota_scope":{_string(e.quota_scope)},"reserved_pico_usd":{e.reserved_pico_usd},'
        f'"quota_model":{_string(e.quota_model)},"lease":{_string(e.lease)},"cached":{JSON_BOOLEAN[e.cached]},'
        f'"hung_up":{JSON_BOOLEAN[e.hung_up]},"service_tier":{_string(e.service_tier)},"latency":{_string(e.latency)},'
        f'"tags":{tags}}}\n'
    ).encode()
