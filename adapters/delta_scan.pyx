# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""`adapters.delta_size`'s sizing in C, compiled by Cython where `make install` builds it
(issue #20): the same answers as the regular expressions, on any bytes.

Every read of a stream before Bedrock's count has its deltas' text sized, for the
estimate a cut stream needs. With the regular expressions that cost 0.37 µs per
ConverseStream frame and 0.68 µs per InvokeModel frame: a scan of every byte, a bytes
object per text, and for InvokeModel a base64 decode per delta. The mypyc-compiled walk
did no better (a method call from it costs 0.2–0.3 µs, a loop ≈ 2 ns a byte). Here
`memchr` finds each candidate, and nothing is made: the InvokeModel tails are decoded
only to count their bytes and backslashes.

Where no build loads (no C compiler, the container image), `adapters.delta_size` keeps
its regular expressions; tests/adapters/test_delta_scan.py holds the two to the same
answers on generated streams and on arbitrary bytes.
"""

from libc.string cimport memchr, memcmp

cdef extern from "Python.h":
    const char* PyBytes_AS_STRING(object)
    Py_ssize_t PyBytes_GET_SIZE(object)

# adapters.delta_size's _CONVERSE_DELTA: `"delta":{`, then one of three keys and `:"`.
cdef const char* _DELTA = b'"delta":{'
cdef const char* _TEXT = b'"text":"'
cdef const char* _TOOL_INPUT = b'"toolUse":{"input":"'
cdef const char* _REASONING = b'"reasoningContent":{"text":"'

# The base64 alphabet's values; 64: padding; 255: not in it.
cdef unsigned char _B64[256]
cdef const unsigned char* _ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
cdef int _i
for _i in range(256):
    _B64[_i] = 255
for _i in range(64):
    _B64[_ALPHABET[_i]] = _i
_B64[61] = 64  # "="


cdef inline Py_ssize_t _find(const unsigned char* data, Py_ssize_t pos, Py_ssize_t end,
                             const char* needle, Py_ssize_t width) noexcept nogil:
    """Where `needle` first lies whole in data[pos:end], -1 if nowhere."""
    cdef const unsigned char* at
    while end - pos >= width:
        at = <const unsigned char*>memchr(data + pos, needle[0], end - width + 1 - pos)
        if at == NULL:
            return -1
        pos = at - data
        if memcmp(data + pos, needle, width) == 0:
            return pos
        pos += 1
    return -1


cdef inline bint _at(const unsigned char* data, Py_ssize_t pos, Py_ssize_t end,
                     const char* prefix, Py_ssize_t width) noexcept nogil:
    return end - pos >= width and memcmp(data + pos, prefix, width) == 0


def converse_text_bytes(bytes frames, Py_ssize_t end):
    """`adapters.delta_size.converse_delta_text_bytes_interpreted(frames, end)`: each match
    of `_CONVERSE_DELTA` in `frames[:end]`, left to right, counts its string's length less
    one per escape (a backslash and any byte but a newline, the expression's `.`)."""
    cdef const unsigned char* data = <const unsigned char*>PyBytes_AS_STRING(frames)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(frames)
    cdef Py_ssize_t pos = 0, at, body, index, escapes, total = 0
    cdef unsigned char byte
    cdef bint closed
    if end > size:
        end = size
    if end < 0:
        end = 0
    while True:
        at = _find(data, pos, end, _DELTA, 9)
        if at < 0:
            return total
        body = at + 9
        if _at(data, body, end, _TEXT, 8):
            body += 8
        elif _at(data, body, end, _TOOL_INPUT, 20):
            body += 20
        elif _at(data, body, end, _REASONING, 28):
            body += 28
        else:
            pos = at + 1
            continue
        index = body
        escapes = 0
        closed = False
        while index < end:
            byte = data[index]
            if byte == 34:  # the closing quote
                closed = True
                break
            if byte == 92:  # an escape: the backslash and the byte after it, not a newline
                if index + 1 >= end or data[index + 1] == 10:
                    break
                escapes += 1
                index += 2
            else:
                index += 1
        if not closed:
            pos = at + 1  # no match here: the expression tries the next byte
            continue
        total += index - body - escapes
        pos = index + 1


def claude_text_bytes(bytes frames, Py_ssize_t end, bytes head, tuple middles, Py_ssize_t tail_bytes):
    """`adapters.delta_size`'s fast path for Claude: each match of `_CLAUDE_TEXT_CHUNK` in
    `frames[:end]` (`head`, then 52 bytes, then up to the next quote) must have its 52
    bytes among `middles` and its tail be plain base64 (the alphabet, `=` only at the
    end, whole quads): then the decoded tails, laid end to end, are sized as
    `_unescaped_size` sizes them, less `tail_bytes` per tail. -1 when a middle or a tail
    is another (the caller's regular expressions answer then)."""
    cdef const unsigned char* data = <const unsigned char*>PyBytes_AS_STRING(frames)
    cdef const char* wanted = PyBytes_AS_STRING(head)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(frames), width = PyBytes_GET_SIZE(head)
    cdef Py_ssize_t pos = 0, at, middle, tail, closing, index, length
    cdef Py_ssize_t decoded = 0, backslashes = 0, pairs = 0, run = 0, tails = 0
    cdef unsigned char* closing_at
    cdef unsigned int quad
    cdef unsigned char value, byte
    cdef int filled, pads, k
    cdef bytes known
    cdef bint found
    if end > size:
        end = size
    if end < 0:
        end = 0
    while True:
        at = _find(data, pos, end, wanted, width)
        if at < 0:
            break
        middle = at + width
        tail = middle + 52
        if tail > end:
            break  # no later match can have its 52 bytes either
        closing_at = <unsigned char*>memchr(data + tail, 34, end - tail)
        if closing_at == NULL:
            break  # nor a closing quote
        closing = closing_at - data
        found = False
        for known in middles:
            if PyBytes_GET_SIZE(known) == 52 and memcmp(data + middle, PyBytes_AS_STRING(known), 52) == 0:
                found = True
                break
        if not found:
            return -1
        length = closing - tail
        if length % 4:
            return -1
        # Decode the tail, counting its bytes, its backslashes and the pairs a
        # left-to-right count of `\\` finds across all tails laid end to end.
        pads = 0
        index = tail
        while index < closing:
            quad = 0
            filled = 0
            for k in range(4):
                value = _B64[data[index + k]]
                if value == 255:
                    return -1
                if value == 64:
                    pads += 1
                    value = 0
                elif pads:
                    return -1  # a character after padding
                quad = (quad << 6) | value
                filled += 1
            index += 4
            if pads and (index < closing or pads > 2):
                return -1  # padding only in the last quad, at most two
            for k in range(3 - pads):
                byte = (quad >> (16 - 8 * k)) & 0xFF
                decoded += 1
                if byte == 92:
                    backslashes += 1
                    run += 1
                else:
                    pairs += run // 2
                    run = 0
        tails += 1
        pos = closing + 1
    pairs += run // 2
    return decoded - backslashes + pairs - tail_bytes * tails
