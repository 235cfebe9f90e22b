"""Refuse a request head no Bedrock client sends, before anything else reads it.

`check_request_head` runs first for every data-port request and raises
`ValidationException` (400) for:

* more than `limits.max_header_count` header fields, or header lines (`name:
  value\\r\\n`) of more than `limits.max_header_bytes` in all;
* a header name that is not an RFC 9110 token, or a value with anything but
  visible ASCII, space and tab: control characters (CR, LF, NUL …) and
  obs-text (bytes ≥ 0x80), which RFC 9110 §5.5 lets a recipient refuse (with
  the httpx upstream client of 2026-11, a non-ASCII value was a 500 and a
  traceback: it encodes header values as ASCII);
* a repeated `Content-Type` or `Content-Length` field: which one a reader takes
  decides how the body is framed and read (RFC 9110 §5.3, §8.6; request
  smuggling), so two of them are refused rather than guessed between;
* a request target with bytes outside visible ASCII, or a path segment that is
  a dot segment (`.`, `..`, RFC 3986 §5.2.4) or holds one, a control character
  or a backslash once percent-decoded (`%2e%2e`, `..%2F..`, `%252e`): the path
  is re-signed with the proxy's own credentials, and URL libraries and
  botocore's signer remove dot segments (httpx turned `/async-invoke/..` into a
  signed `GET /`; yarl does so with `%2e%2e` too), as might an intermediary
  that decodes `%2F`.

Why 400 `ValidationException` and not 431: it is what Bedrock answers for a
request it will not take (an oversized body, an invalid model id), botocore
raises it as the modelled `ValidationException` and never retries it, the
Anthropic SDK raises `BadRequestError` without retry,
and the uvicorn parsers answer malformed heads with a 400 as well. A 431
would reach those clients as an unmodelled status with no named exception.

What the HTTP server does before this runs (uvicorn 0.54, measured 2026-11):
the default `httptools` parser has no header size or count limit of its own
(a 10 MB header and 10,000 headers reach the app); it answers CR or LF inside
a value, NUL or other control characters, obs-fold and invalid names with its
own plain-text 400 and closes the connection; it passes obs-text (non-ASCII)
through. The `h11` parser (used when httptools is missing) refuses a head
beyond `h11_max_incomplete_event_size` (16 KiB by default, counted per read,
so about 100 KB still passed in one read) and CR, NUL and invalid names, but
accepts bare LF line ends, obs-fold, and control characters other than NUL in
values. The limits here therefore hold whichever parser runs; they bound what
the proxy forwards, not the memory a parser spends on a huge head first — put
a load balancer with header limits (an ALB: 64 KB) in front of an exposed port.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from urllib.parse import unquote

from proxy.config import LimitsConfig
from proxy.errors import ValidationException

__all__ = ["check_request_head"]

#: RFC 9110 §5.6.2 `token`: the bytes a field name may hold.
_TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: Visible ASCII, space and horizontal tab: the bytes a field value may hold.
_VALUE_BYTES = b"\t" + bytes(range(0x20, 0x7F))
#: A percent-escape that may decode to a dot segment, a separator, a control
#: character or another escape (`%252e`); other segments need no decoding.
_SUSPECT_ESCAPE = re.compile(r"%(?:2e|2f|5c|25|[01][0-9a-f]|7f)", re.IGNORECASE)
#: A decoded path segment holding a control character or a backslash.
_BAD_SEGMENT = re.compile(r"[\x00-\x1f\x7f\\]")
#: Rounds of percent-decoding: `%252e` is `%2e` after one, `.` after two.
_DECODE_ROUNDS = 3
_INVALID_MODEL = "The provided model identifier is invalid."
#: Bytes a header line adds on the wire besides its name and value: `: ` and CRLF.
_LINE_OVERHEAD = 4


def check_request_head(
    headers: Sequence[tuple[bytes, bytes]], raw_path: str, raw_query: str, limits: LimitsConfig
) -> None:
    """Raise `ValidationException` unless the head is within `limits` and well-formed.

    `headers` are the ASGI scope's raw (name, value) pairs; `raw_path` and
    `raw_query` the request target as received. Messages never echo a value.
    """
    if len(headers) > limits.max_header_count:
        raise ValidationException(
            f"The request has {len(headers)} headers, more than the limit of {limits.max_header_count}."
        )
    # Joined once and checked with bytes.translate: a few microseconds for a whole SDK head.
    names = b"".join([name for name, _ in headers])
    values = b"".join([value for _, value in headers])
    size = len(names) + len(values) + _LINE_OVERHEAD * len(headers)
    if size > limits.max_header_bytes:
        raise ValidationException(
            f"The request headers take {size} bytes, more than the limit of {limits.max_header_bytes} bytes."
        )
    if names.translate(None, _TOKEN_BYTES) or values.translate(None, _VALUE_BYTES):
        raise _bad_header(headers)
    _check_single(headers)
    _check_target(raw_path, raw_query)


#: Fields a request may carry once, lower-case → as messages spell them.
_SINGLE = {b"content-type": "Content-Type", b"content-length": "Content-Length"}


def _check_single(headers: Sequence[tuple[bytes, bytes]]) -> None:
    """Refuse a repeated framing field; one pass, names compared in lower case."""
    seen: set[bytes] = set()
    for key, _ in headers:
        if len(key) in (12, 14):  # the lengths of the two names: most fields skip the lower()
            name = key.lower()
            if name in _SINGLE:
                if name in seen:
                    raise ValidationException(f"The request has more than one {_SINGLE[name]} header; send one.")
                seen.add(name)


def _bad_header(headers: Sequence[tuple[bytes, bytes]]) -> ValidationException:
    for name, value in headers:
        if name.translate(None, _TOKEN_BYTES):
            break
        if value.translate(None, _VALUE_BYTES):
            return ValidationException(
                f"The value of the request header '{name.decode('ascii')[:64]}' contains characters "
                "other than visible ASCII, spaces and tabs."
            )
    return ValidationException("A request header name is not a valid HTTP token.")


def _visible_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable() and " " not in text


#: Longer targets are checked every time (the kept ones stay a few hundred KiB at most).
_KEPT_TARGET_LENGTH_MAX = 512


def _check_target(raw_path: str, raw_query: str) -> None:
    if len(raw_path) + len(raw_query) <= _KEPT_TARGET_LENGTH_MAX:
        _check_kept_target(raw_path, raw_query)
    else:
        _check_new_target(raw_path, raw_query)


def _check_new_target(raw_path: str, raw_query: str) -> None:
    if not (_visible_ascii(raw_path) and _visible_ascii(raw_query)):
        raise ValidationException("The request target contains characters other than visible ASCII.")
    if "\\" in raw_path:
        raise ValidationException("The request path contains a backslash.")
    segments = raw_path.split("/")
    for index, segment in enumerate(segments):
        if segment in (".", ".."):
            raise _bad_segment(segments, index)
        if "%" not in segment or _SUSPECT_ESCAPE.search(segment) is None:
            continue  # nothing in it decodes to a separator, a dot or a control character
        decoded = segment
        for _ in range(_DECODE_ROUNDS):
            if "%" not in decoded:
                break
            decoded = unquote(decoded, errors="replace")
        if _BAD_SEGMENT.search(decoded) is not None or any(
            part in (".", "..") for part in decoded.split("/")
        ):
            raise _bad_segment(segments, index)


def _bad_segment(segments: list[str], index: int) -> ValidationException:
    if index == 2 and segments[1] == "model":
        return ValidationException(_INVALID_MODEL)  # Bedrock's words for a bad model id (proxy/routing.py)
    return ValidationException("The request path contains a dot segment or an encoded control character.")


#: Targets already found well-formed: a client sends the same few paths request after
#: request (issue #20). A refusal raises, so only well-formed ones are kept.
_check_kept_target = functools.lru_cache(maxsize=512)(_check_new_target)
