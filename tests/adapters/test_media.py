"""Images and documents in estimates (issue #16, item 9): counted by their
families' documented formulas, never as 0 and never as base64 text."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from adapters.estimate import estimate_usage, request_input_tokens
from adapters.media import (
    MAX_CLAUDE_IMAGE_TOKENS,
    image_size,
    image_tokens,
    media_tokens,
    pdf_pages,
)
from tests.adapters.cassettes import interaction
from tests.adapters.strategies import fuzz

CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
NOVA = "us.amazon.nova-lite-v1:0"
NOVA_2 = "us.amazon.nova-2-lite-v1:0"


def png(width: int, height: int) -> bytes:
    """A complete, valid grey PNG (PNG spec §11.2.2 IHDR)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def gif(width: int, height: int) -> bytes:
    """GIF89a logical screen descriptor (GIF89a spec §18) and an empty trailer."""
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b";"


def jpeg(width: int, height: int, app_bytes: int = 16) -> bytes:
    """SOI, an APP1 segment of `app_bytes` (EXIF sits there), then a baseline SOF0
    frame header (ITU T.81 §B.2.2): the bytes a size reader must walk."""
    app1 = b"\xff\xe1" + struct.pack(">H", app_bytes + 2) + b"E" * app_bytes
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app1 + sof0 + b"\xff\xda"


def webp(width: int, height: int, kind: str) -> bytes:
    """RIFF/WEBP with a VP8 (lossy), VP8L (lossless) or VP8X (extended) first chunk
    (RFC 9649 §2.5, §3.2, §2.7)."""
    if kind == "VP8 ":
        body = b"\x00" * 3 + b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    elif kind == "VP8L":
        body = b"\x2f" + struct.pack("<I", (width - 1) | (height - 1) << 14)
    else:
        body = b"\x00" * 4 + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunk = kind.encode() + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (png(37, 21), (37, 21)),
        (gif(640, 480), (640, 480)),
        (jpeg(1920, 1080), (1920, 1080)),
        (jpeg(800, 600, app_bytes=60_000), (800, 600)),
        (webp(1024, 768, "VP8 "), (1024, 768)),
        (webp(300, 200, "VP8L"), (300, 200)),
        (webp(4000, 3000, "VP8X"), (4000, 3000)),
        (b"\x89PNG\r\n\x1a\n", None),
        (b"%PDF-1.4", None),
        (b"", None),
    ],
)
def test_image_size_from_the_header(data: bytes, size: tuple[int, int] | None) -> None:
    assert image_size(data) == size


@fuzz(200)
@given(st.binary(max_size=64))
@example(b"\xff\xd8\xff")
@example(b"\xff\xd8\xff\xe1\x00\x00")
@example(b"RIFF\x00\x00\x00\x00WEBPVP8X")
def test_image_size_never_raises(data: bytes) -> None:
    size = image_size(data)
    assert size is None or (len(size) == 2 and all(type(side) is int and side >= 0 for side in size))


@fuzz(100)
@given(st.integers(1, 16_383), st.integers(1, 16_383), st.sampled_from(["png", "gif", "jpeg", "VP8L", "VP8X"]))
def test_image_size_reads_any_size_back(width: int, height: int, kind: str) -> None:
    data = {"png": lambda: png(1, 1)[:16] + struct.pack(">II", width, height), "gif": lambda: gif(width, height),
            "jpeg": lambda: jpeg(width, height)}.get(kind, lambda: webp(width, height, kind))()
    assert image_size(data) == (width, height)


@pytest.mark.parametrize(
    ("size", "model", "tokens"),
    [
        # Claude: width × height / 750, at most ~1,600 (docs.claude.com "Vision").
        ((200, 200), CLAUDE, 54),
        ((1000, 1000), CLAUDE, 1334),
        ((1092, 1092), CLAUDE, 1590),
        ((4000, 3000), CLAUDE, MAX_CLAUDE_IMAGE_TOKENS),
        (None, CLAUDE, MAX_CLAUDE_IMAGE_TOKENS),
        ((200, 200), "meta.llama3-2-11b-instruct-v1:0", 54),  # no formula of its own: Claude's
        # Nova 1: the user guide's examples (its own 800×400 example → 900×450 → ~800).
        ((800, 400), NOVA, 800),
        ((900, 900), NOVA, 1300),
        ((1400, 900), NOVA, 1800),
        ((1920, 1080), NOVA, 2400),
        ((1300, 1300), NOVA, 2600),
        ((100, 100), NOVA, 1300),  # scaled up to 900×900
        (None, NOVA, 2600),
        # Nova 2: a flat 230 per image.
        ((4000, 3000), NOVA_2, 230),
        (None, NOVA_2, 230),
    ],
)
def test_image_tokens(size: tuple[int, int] | None, model: str, tokens: int) -> None:
    assert image_tokens(size, model) == tokens


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _pdf(pages: int) -> bytes:
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objects = ["1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj",
               f"2 0 obj <</Type /Pages /Kids [{kids}] /Count {pages}>> endobj",
               *(f"{3 + i} 0 obj <</Type/Page /Parent 2 0 R /MediaBox [0 0 612 792]>> endobj" for i in range(pages))]
    return ("%PDF-1.4\n" + "\n".join(objects) + "\ntrailer <</Root 1 0 R>>\n%%EOF\n").encode()


def test_pdf_pages() -> None:
    assert pdf_pages(_pdf(1)) == 1
    assert pdf_pages(_pdf(7)) == 7
    # Page objects hidden in compressed object streams: one page per 32 KiB.
    assert pdf_pages(b"%PDF-1.7\n" + b"\x00" * 100_000) == 4
    assert pdf_pages(b"") == 1


def test_recorded_pdf_is_one_page() -> None:
    """The one real PDF in the recordings (pydantic-ai, Converse on Pixtral): a page."""
    item = interaction("pydantic-ai/test_bedrock_media_kind_delivered_in_tool_result[mistral_document].yaml#2")
    document = json.loads(item.request_body)["messages"][2]["content"][0]["toolResult"]["content"][0]
    assert pdf_pages(base64.b64decode(document["document"]["source"]["bytes"])) == 1
    # Converse extracts the text: ~1,000 tokens for 3 pages (docs.claude.com "PDF support").
    assert media_tokens(document, "us.mistral.pixtral-large-2502-v1:0") == 333


@pytest.mark.parametrize(
    ("block", "model", "tokens"),
    [
        ({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": _b64(png(600, 400))}},
         CLAUDE, 320),
        ({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}, CLAUDE, 1600),
        ({"image": {"format": "gif", "source": {"bytes": _b64(gif(900, 900))}}}, NOVA, 1300),
        ({"image": {"format": "png", "source": {"s3Location": {"uri": "s3://b/k.png"}}}}, NOVA, 2600),
        ({"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + _b64(jpeg(750, 100))}}, CLAUDE, 100),
        # Claude's visual PDF mode: ~7,000 tokens for 3 pages.
        ({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": _b64(_pdf(3))}},
         CLAUDE, 6999),
        ({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x" * 400}}, CLAUDE, 100),
        ({"document": {"format": "pdf", "name": "d", "source": {"bytes": _b64(_pdf(3))}}}, CLAUDE, 999),
        ({"document": {"format": "pdf", "name": "d", "source": {"bytes": _b64(_pdf(3))},
                       "citations": {"enabled": True}}}, CLAUDE, 6999),
        ({"document": {"format": "csv", "name": "d", "source": {"bytes": _b64(b"a,b\n" * 100)}}}, NOVA, 100),
        ({"document": {"format": "txt", "name": "d", "source": {"text": "y" * 40}}}, NOVA, 10),
        ({"text": "not a medium"}, CLAUDE, None),
        ({"type": "text", "text": "nor this"}, CLAUDE, None),
    ],
)
def test_media_tokens(block: dict[str, Any], model: str, tokens: int | None) -> None:
    assert media_tokens(block, model) == tokens


def test_images_count_in_the_estimate_not_as_text() -> None:
    """A 1000×1000 PNG (1,334 tokens on Claude) beside 8 bytes of text."""
    image = _b64(png(1000, 1000))
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": image}},
                                     {"type": "text", "text": "describe"}]}]}).encode()
    assert request_input_tokens(body, CLAUDE) == 2 + 1334
    usage = estimate_usage(body, 40, CLAUDE)
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (1336, 10, True)


def test_a_request_of_images_only_is_not_its_raw_size() -> None:
    body = json.dumps({"messages": [{"role": "user", "content": [
        {"image": {"format": "png", "source": {"bytes": _b64(png(900, 450))}}}]}]}).encode()
    assert request_input_tokens(body, NOVA) == 800


def test_llama_images() -> None:
    body = json.dumps({"prompt": "abcd", "images": [_b64(png(750, 10)), _b64(gif(75, 100))]}).encode()
    assert request_input_tokens(body, "us.meta.llama3-2-11b-instruct-v1:0") == 1 + 10 + 10


def test_without_a_model_the_claude_formula_is_used() -> None:
    """Admission's worst case has no served model yet: the documented general formula."""
    body = json.dumps({"messages": [{"role": "user", "content": [
        {"image": {"format": "png", "source": {"bytes": _b64(png(1000, 1000))}}}]}]}).encode()
    assert estimate_usage(body, 0).input_tokens == 1334
