"""proxy/headers.py against its plain statement (RFC 9110 §7.6.1 and the proxy's own rules),
for any header list: names in any case, repeated, named by `Connection`."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.headers import (
    CLIENT_AUTH,
    HOP_BY_HOP,
    request_headers_for_upstream,
    response_headers_for_client,
)

_NAMES = ["Connection", "connection", "Keep-Alive", "TE", "Transfer-Encoding", "Upgrade", "Proxy-Authorization",
          "Authorization", "X-Amz-Date", "x-amz-security-token", "X-Amz-Content-SHA256", "Host", "Content-Length",
          "Accept-Encoding", "Expect", "Date", "Content-Type", "content-type", "X-Costkeeper-Tag-Job",
          "x-amzn-requestid", "X-Amzn-Bedrock-Input-Token-Count", "Accept", "User-Agent", "x-custom", "X-Custom"]
_VALUES = st.sampled_from(["", "a", " b , c ", "keep-alive", "x-custom, Accept", "close", "Date,te", "é"])
_HEADERS = st.lists(st.tuples(st.sampled_from(_NAMES).map(lambda n: n.encode()),
                              _VALUES.map(lambda v: v.encode("latin-1"))), max_size=12)


def _named(raw: list[tuple[bytes, bytes]]) -> set[str]:
    return {token.strip().lower() for name, value in raw if name.lower() == b"connection"
            for token in value.decode("latin-1").split(",")}


@given(_HEADERS)
@settings(max_examples=300)
def test_request_headers_are_the_clients_minus_the_dropped(raw: list[tuple[bytes, bytes]]) -> None:
    dropped = HOP_BY_HOP | CLIENT_AUTH | {"host", "content-length", "accept-encoding", "expect"} | _named(raw)
    expected: dict[str, str] = {}
    for name, value in raw:
        lower = name.decode().lower()
        if lower not in dropped and not lower.startswith("x-costkeeper-"):
            decoded = value.decode("latin-1")
            expected[lower] = f"{expected[lower]},{decoded}" if lower in expected else decoded
    expected["accept-encoding"] = "identity"
    assert request_headers_for_upstream(list(raw)) == expected
    assert request_headers_for_upstream(list(raw)) == expected  # names known from the first call


@given(_HEADERS, st.booleans())
@settings(max_examples=300)
def test_response_headers_are_the_upstreams_minus_the_dropped(raw: list[tuple[bytes, bytes]], keep: bool) -> None:
    dropped = HOP_BY_HOP | {"date"} | _named(raw) | (set() if keep else {"content-length"})
    expected = [(name, value) for name, value in raw if name.decode().lower() not in dropped]
    assert response_headers_for_client(raw, keep_length=keep) == expected
    assert response_headers_for_client(raw, keep_length=keep) == expected


@given(_HEADERS)
@settings(max_examples=100)
def test_the_kept_names_are_bounded_and_change_no_answer(raw: list[tuple[bytes, bytes]]) -> None:
    """Header names are kept decoded in a plain dict (issue #20), client-chosen ones too:
    once it is full it starts again (adapters/memo.py), with the same answers."""
    from proxy import headers

    fresh_request, fresh_response = request_headers_for_upstream(raw), response_headers_for_client(raw)
    kept, bound = headers._NAMES, headers._NAMES_KEPT
    try:
        headers._NAMES, headers._NAMES_KEPT = {}, 2
        assert request_headers_for_upstream(raw) == fresh_request
        assert response_headers_for_client(raw) == fresh_response
        assert request_headers_for_upstream(raw) == fresh_request  # kept, or worked out again
        assert len(headers._NAMES) <= 2
    finally:
        headers._NAMES, headers._NAMES_KEPT = kept, bound
