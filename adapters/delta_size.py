"""The size of the text in a stream's delta frames, read in bulk from their bytes without
decoding each frame's JSON (issue #20: a JSON and base64 decode of every delta was most
of a relayed frame's CPU in the usage watcher).

Most frames of a stream are deltas, and a delta carries no usage: its text is needed
only to estimate a stream cut before Bedrock's own count. So the watcher reads a
delta's text here, with one regular-expression pass (in C) over all the frames a
`feed` brought, instead of a JSON decode per frame. Where `make install` built
adapters/delta_scan.pyx, that C module gives the same answers without the expressions'
bytes objects and decodes (≈ 15× less CPU a frame: every read of a long stream before
Bedrock's count is sized, issue #20):

* ConverseStream: each `"delta":{"text":"…"` (or `"toolUse":{"input":"…"`,
  `"reasoningContent":{"text":"…"`), what `adapters.converse.delta_text` reads;
* InvokeModelWithResponseStream on Claude: the base64 of each chunk whose event begins
  `{"type":"content_block_delta","index":` (`CLAUDE_DELTA_BASE64`, the prefix the
  watcher tells them by), decoded in C, then each `text_delta`'s `text`,
  `input_json_delta`'s `partial_json` and `thinking_delta`'s `thinking`, what
  `adapters.anthropic.output_text` reads.

A key sequence like `"delta":{"text":"` can only be JSON structure (inside a string its
quotes are escaped), and the frame headers and CRCs around the payloads cannot spell it.

The size is the text's UTF-8 bytes: each JSON string's length with each escape's
backslash taken off (`\\n` is one byte, `\\\\` one). For ASCII text that is exactly
the character count of the decoded text, which the watcher counted before; other text
counts its UTF-8 bytes, the unit `adapters.estimate` rates at four to a token (a
`\\uXXXX` escape, which no recording carries, counts five).
"""

from __future__ import annotations

import re
from base64 import b64encode
from binascii import Error as Base64Error
from binascii import a2b_base64
from collections.abc import Callable
from functools import partial

from adapters.compiled import load

__all__ = [
    "CLAUDE_DELTA_BASE64",
    "CLAUDE_PASSED_BASE64",
    "CLAUDE_TEXT_HEAD",
    "TEXT_DELTA_MIDDLES_IN_ORDER",
    "claude_delta_text_bytes",
    "claude_delta_text_bytes_interpreted",
    "converse_delta_text_bytes",
    "converse_delta_text_bytes_interpreted",
]

#: A JSON string's body: no unescaped quote.
_STRING = rb'"([^"\\]*(?:\\.[^"\\]*)*)"'
_CONVERSE_DELTA = re.compile(rb'"delta":\{(?:"text"|"toolUse":\{"input"|"reasoningContent":\{"text"):' + _STRING)
_CLAUDE_DELTA = re.compile(
    rb'"delta":\{"type":"(?:text_delta","text|input_json_delta","partial_json|thinking_delta","thinking)":' + _STRING)
_CLAUDE_DELTA_HEAD = b'{"type":"content_block_delta","index":'
#: A chunk payload (`{"bytes":"<base64>"…`) whose event is a Claude `content_block_delta`:
#: the base64 of the head's first whole 3-byte groups, which does not depend on what follows.
CLAUDE_DELTA_BASE64 = b'{"bytes":"' + b64encode(_CLAUDE_DELTA_HEAD[: len(_CLAUDE_DELTA_HEAD) // 3 * 3])
#: The chunk payloads the watcher passes over: deltas, and a content block's start and
#: stop (no usage, and no text but a delta's; `adapters.anthropic.output_text`).
CLAUDE_PASSED_BASE64 = (CLAUDE_DELTA_BASE64, *(
    b'{"bytes":"' + b64encode(head[: len(head) // 3 * 3])
    for head in (b'{"type":"content_block_start","index":', b'{"type":"content_block_stop","index":')))
#: The base64 runs to the next quote (a character outside its alphabet fails the decode).
_CLAUDE_CHUNK = re.compile(rb'\{"bytes":"(' + re.escape(CLAUDE_DELTA_BASE64[10:]) + rb'[^"]*)')
#: Strict: a character outside the alphabet, or padding inside, fails the decode.
_decode = partial(a2b_base64, strict_mode=True)
#: A `text_delta` of block 0 to 9, the usual case, is told by the base64 of its first 75
#: bytes (through `"text"`), and only the rest, `:"` + the text + `"}}`, is decoded:
#: the chunk's base64 in 52 characters after the head's, then the tail.
_TEXT_DELTA_TAIL = 5
#: Those 52 characters for blocks 0 to 9, block 0 first (adapters/delta_scan.pyx compares
#: them in turn; the expressions' path asks the set).
TEXT_DELTA_MIDDLES_IN_ORDER = tuple(
    b64encode(_CLAUDE_DELTA_HEAD + str(index).encode() + b',"delta":{"type":"text_delta","text"')[48:100]
    for index in range(10))
_TEXT_DELTA_MIDDLES = frozenset(TEXT_DELTA_MIDDLES_IN_ORDER)
_CLAUDE_TEXT_CHUNK = re.compile(
    rb'\{"bytes":"' + re.escape(CLAUDE_DELTA_BASE64[10:]) + rb'(.{52})([^"]*)"', re.DOTALL)


def _unescaped_size(texts: bytes) -> int:
    """UTF-8 bytes of JSON string bodies laid end to end. Read left to right, `\\\\`
    pairs as a JSON parser pairs it, so each escape loses exactly its backslash."""
    backslashes = texts.count(b"\\")
    return len(texts) - backslashes + texts.count(b"\\\\") if backslashes else len(texts)


def converse_delta_text_bytes_interpreted(frames: bytes, end: int) -> int:
    """Text bytes in the ConverseStream `contentBlockDelta` frames of `frames[:end]`."""
    return _unescaped_size(b"".join(_CONVERSE_DELTA.findall(frames, 0, end)))


def claude_delta_text_bytes_interpreted(frames: bytes, end: int) -> int:
    """Text bytes in the Claude `content_block_delta` chunks of `frames[:end]`."""
    found = _CLAUDE_TEXT_CHUNK.findall(frames, 0, end)
    if not found:
        return 0
    middles, tails = zip(*found, strict=True)
    if _TEXT_DELTA_MIDDLES.issuperset(middles):  # every one a text delta of block 0 to 9
        try:
            return _unescaped_size(b"".join(map(a2b_base64, tails))) - _TEXT_DELTA_TAIL * len(tails)
        except Base64Error:
            pass
    encoded = _CLAUDE_CHUNK.findall(frames, 0, end)
    if not encoded:
        return 0
    try:
        events = b"".join(map(_decode, encoded))
    except Base64Error:  # a chunk's base64 is cut short: the others still count
        events = b"".join(_decoded(item) for item in encoded)
    return _unescaped_size(b"".join(_CLAUDE_DELTA.findall(events)))


def _decoded(encoded: bytes) -> bytes:
    try:
        return _decode(encoded)
    except Base64Error:
        return b""


#: What `_CLAUDE_TEXT_CHUNK` matches before the 52 characters it checks.
CLAUDE_TEXT_HEAD = b'{"bytes":"' + CLAUDE_DELTA_BASE64[10:]
_scan = load("adapters.delta_scan")


def _claude_delta_text_bytes_compiled(frames: bytes, end: int) -> int:
    size: int = _scan.claude_text_bytes(frames, end, CLAUDE_TEXT_HEAD,  # type: ignore[union-attr]
                                        TEXT_DELTA_MIDDLES_IN_ORDER, _TEXT_DELTA_TAIL)
    return size if size >= 0 else claude_delta_text_bytes_interpreted(frames, end)


#: What the watcher sizes with: adapters/delta_scan.pyx where `make install` built it
#: (the same answers in C, ≈ 15× less CPU per frame, issue #20), else the regular
#: expressions above. tests/adapters/test_delta_scan.py holds the two alike on any bytes.
converse_delta_text_bytes: Callable[[bytes, int], int] = (
    converse_delta_text_bytes_interpreted if _scan is None else _scan.converse_text_bytes)
claude_delta_text_bytes: Callable[[bytes, int], int] = (
    claude_delta_text_bytes_interpreted if _scan is None else _claude_delta_text_bytes_compiled)
