"""Input tokens of the images and documents in a request, for estimates.

An estimate that counts a 1,600-token image as 0 (its base64 is no text the
model reads) under-bills exactly the requests that cost most per byte, so each
medium is counted by the formula its model family documents:

* **Claude** (and any family that documents none): tokens ≈ width × height / 750;
  an image whose long edge is over 1,568 px, or that would cost more than
  ~1,600 tokens, is first scaled down, so ~1,600 is the most one image costs
  (docs.claude.com, "Vision: Evaluate image size", 2025).
* **Nova 1** (`amazon.nova-micro/lite/pro-v1`): each image is rescaled to its
  closest aspect ratio with a side of about 900 px; the user guide's examples
  are 900×450 ~800, 900×900 ~1,300, 1400×900 ~1,800, 1800×900 ~2,400,
  1300×1300 ~2,600 tokens (AWS Nova user guide, "Image understanding", 2025).
  The nearest example after that rescale is taken.
* **Nova 2** (`amazon.nova-2-…`): billed at a flat 230 tokens per image (AWS Nova 2
  user guide, "Multimodal understanding: image-token estimation", 2025).
* **PDFs**: per page. Claude's visual PDF mode (a Messages `document` block, or a
  Converse document with citations enabled) reads each page as text plus an
  image: ~7,000 tokens for 3 pages; Converse's default text extraction ~1,000
  for 3 pages (docs.claude.com, "PDF support: Amazon Bedrock", 2025). The pages
  are counted from the `/Type /Page` objects; a PDF that hides them in
  compressed object streams is taken as one page per 32 KiB (an assumption: a
  text page is a few KiB compressed, a scanned one far more).
* Other documents (txt, csv, md, html, docx…) are counted as text of their size.

Dimensions come from the first bytes of the image (`image_size`: PNG, JPEG, GIF,
WebP headers), never from decoding it; an image whose size cannot be read costs
its family's documented maximum.
"""

from __future__ import annotations

import binascii
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from adapters.modelid import base_model_id

__all__ = ["image_size", "image_tokens", "pdf_pages", "media_tokens", "MAX_CLAUDE_IMAGE_TOKENS"]

#: Claude's largest image after its own downscale (docs.claude.com, "Vision").
MAX_CLAUDE_IMAGE_TOKENS = 1_600
_CLAUDE_PIXELS_PER_TOKEN = 750
#: (long edge, short edge) → tokens: the Nova 1 user guide's examples.
_NOVA_EXAMPLES = ((900, 450, 800), (900, 900, 1_300), (1_400, 900, 1_800), (1_800, 900, 2_400),
                  (1_300, 1_300, 2_600))
_NOVA_MIN_LONG_EDGE = 900
_NOVA_2_IMAGE_TOKENS = 230
_PDF_VISUAL_TOKENS_PER_PAGE = 7_000 // 3
_PDF_TEXT_TOKENS_PER_PAGE = 1_000 // 3
_PDF_BYTES_PER_PAGE = 32 * 1024
#: Enough base64 for a JPEG's frame header behind a 64 KiB EXIF block.
_HEADER_BASE64_CHARS = 96 * 1024
_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")
_JPEG_SIZE_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_BYTES_PER_TEXT_TOKEN = 4


def _b16(data: bytes, at: int, order: Literal["big", "little"]) -> int:
    return int.from_bytes(data[at : at + 2], order)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_SIZE_MARKERS:
            return _b16(data, pos + 7, "big"), _b16(data, pos + 5, "big")
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        pos += 2 + _b16(data, pos + 2, "big")
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    kind = data[12:16]
    if kind == b"VP8 " and len(data) >= 30:
        return _b16(data, 26, "little") & 0x3FFF, _b16(data, 28, "little") & 0x3FFF
    if kind == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, GIF or WebP; None if unreadable."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith((b"GIF87a", b"GIF89a")) and len(data) >= 10:
        return _b16(data, 6, "little"), _b16(data, 8, "little")
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return _webp_size(data)
    return None


def _nova_tokens(width: int, height: int) -> int:
    long_edge, short_edge = max(width, height), min(width, height)
    if long_edge < _NOVA_MIN_LONG_EDGE:
        scale = _NOVA_MIN_LONG_EDGE / long_edge
        long_edge, short_edge = _NOVA_MIN_LONG_EDGE, round(short_edge * scale)
    nearest = min(_NOVA_EXAMPLES, key=lambda ex: math.hypot(ex[0] - long_edge, ex[1] - short_edge))
    return nearest[2]


def image_tokens(size: tuple[int, int] | None, model_id: str) -> int:
    """One image's input tokens on `model_id`'s family; its maximum when `size` is unknown."""
    base = base_model_id(model_id)
    if base.startswith("amazon.nova-2"):
        return _NOVA_2_IMAGE_TOKENS
    nova = base.startswith("amazon.nova-")
    if size is None or size[0] <= 0 or size[1] <= 0:
        return max(ex[2] for ex in _NOVA_EXAMPLES) if nova else MAX_CLAUDE_IMAGE_TOKENS
    if nova:
        return _nova_tokens(*size)
    return max(1, min(MAX_CLAUDE_IMAGE_TOKENS, math.ceil(size[0] * size[1] / _CLAUDE_PIXELS_PER_TOKEN)))


def _decoded(base64_text: object, limit: int | None = None) -> bytes:
    """The bytes of base64 text (a data URL's payload too); b"" if it is none."""
    if not isinstance(base64_text, str):
        return b""
    text = base64_text.partition(",")[2] if base64_text.startswith("data:") else base64_text
    if limit is not None:
        text = text[:limit]
    text = text[: len(text) // 4 * 4]
    try:
        return binascii.a2b_base64(text)
    except (binascii.Error, ValueError):
        return b""


def pdf_pages(pdf: bytes) -> int:
    """Pages of a PDF: its page objects, else one per 32 KiB (at least one)."""
    pages = len(_PAGE.findall(pdf))
    return pages or max(1, math.ceil(len(pdf) / _PDF_BYTES_PER_PAGE))


def _image(source: object, model_id: str) -> int:
    data = _decoded(source, _HEADER_BASE64_CHARS)
    return image_tokens(image_size(data) if data else None, model_id)


def _text_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8", "surrogatepass")) / _BYTES_PER_TEXT_TOKEN)


def _document(source: Mapping[str, Any], data: object, pdf: bool, visual: bool) -> int:
    """A document from base64 `data`, or from the text a Converse `source` holds instead."""
    text = source.get("text")
    if isinstance(text, str):
        return _text_tokens(text)
    content = source.get("content")
    if isinstance(content, list):
        return sum(_text_tokens(part["text"]) for part in content
                   if isinstance(part, Mapping) and isinstance(part.get("text"), str))
    decoded = _decoded(data)
    if not pdf:
        return math.ceil(len(decoded) / _BYTES_PER_TEXT_TOKEN)
    per_page = _PDF_VISUAL_TOKENS_PER_PAGE if visual else _PDF_TEXT_TOKENS_PER_PAGE
    return pdf_pages(decoded) * per_page if decoded else per_page  # an S3 source: one page


def _child(node: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = node.get(key)
    return value if isinstance(value, Mapping) else {}


def media_tokens(block: Mapping[str, Any], model_id: str) -> int | None:
    """Tokens of `block` if it is an image or a document in any family's shape
    (Claude Messages, Converse / Nova, OpenAI `image_url`); None if it is neither."""
    if "source" not in block and "image" not in block and "document" not in block and "image_url" not in block:
        return None  # the common case, text blocks and messages: estimates run on admission's path
    kind = block.get("type")
    if kind in ("image", "document") and isinstance(block.get("source"), Mapping):
        source = _child(block, "source")  # Claude Messages: base64, url, file or text
        if kind == "image":
            return _image(source.get("data") if source.get("type") == "base64" else None, model_id)
        if source.get("type") == "text" and isinstance(source.get("data"), str):
            return _text_tokens(source["data"])
        return _document({}, source.get("data"), source.get("media_type") == "application/pdf", visual=True)
    image = _child(block, "image")
    if image and ("source" in image or "format" in image):  # Converse and Nova
        return _image(_child(image, "source").get("bytes"), model_id)
    document = _child(block, "document")
    if document and ("source" in document or "format" in document):
        visual = bool(_child(document, "citations").get("enabled"))
        source = _child(document, "source")
        return _document(source, source.get("bytes"), document.get("format") == "pdf", visual)
    if kind == "image_url" or isinstance(block.get("image_url"), Mapping):
        return _image(_child(block, "image_url").get("url"), model_id)
    return None
