"""An upper bound of a request's input tokens, read from its body: the input half of
the worst-case cost a quota admits a request by (metering/leases.py).

An upper bound, not an estimate (`adapters/estimate.py` guesses ≈ 4 bytes a token for
usage Bedrock did not report): a bound that is too low lets spend pass the quota, one
that is too high only holds budget until the request settles. So:

* **Text**: every tokenizer Bedrock's models use (byte-level BPE, SentencePiece with
  byte fallback) makes each token out of at least one byte, so a text has at most as
  many tokens as UTF-8 bytes. Only the strings are counted, not the JSON around them
  (keys, quotes, escapes), and a fixed allowance covers the tokens a chat template
  adds around each message and the request.
* **Tools**, tool calls' inputs and JSON tool results: rendered into the prompt as
  JSON, so their whole JSON text counts, plus the system prompt Anthropic adds for
  tool use (346 tokens for Claude 4 models, its tool-use pricing table, read 2026-12-01).
* **Images**: the largest each family's documented formula gives after its resizing:
  Claude ≈ width × height / 750 on at most ~1.15 megapixels → 1,600; Nova ~2,600 for
  its largest rescaled size (1.3K × 1.3K, Nova user guide) → 3,000; Llama 3.2 vision
  4 tiles of 1,601 → 6,404; Mistral's Pixtral 1024 × 1024 / 16² → 4,096. Other
  families take the largest of these.
* **Documents**: text formats by their UTF-8 bytes; zip-based Office files by the
  uncompressed size of their parts (read from the zip directory, nothing inflated);
  other binary formats by their bytes; PDF by pages × 4,600 (Anthropic: 1,500–3,000
  text tokens a page plus the page as an image), pages counted from the file, or
  Claude's limit of 100 when they cannot be found. A document in S3 takes the
  largest a document can be (4.5 MB of text).
* **Video** (Nova): 960 frames at most, 288 tokens each (Nova user guide).

Never raises: anything unexpected counts as text, or as the largest media item.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import zipfile
from collections.abc import Mapping
from typing import Any

__all__ = ["input_token_bound"]

#: Chat-template tokens around the whole request, and around each message or block.
REQUEST_TOKENS = 64
PART_TOKENS = 8
#: Anthropic's tool-use system prompt (Claude 4: 346 tokens), rounded up.
TOOL_PROMPT_TOKENS = 400
IMAGE_TOKENS: Mapping[str, int] = {"anthropic": 1_600, "nova": 3_000, "llama": 6_404, "mistral": 4_096}
_ANY_IMAGE = max(IMAGE_TOKENS.values())
PDF_PAGE_TOKENS = 4_600
PDF_MAX_PAGES = 100
#: The largest document Converse accepts (4.5 MB), counted as text.
MAX_DOCUMENT_TOKENS = 4_500_000
VIDEO_TOKENS = 960 * 288
_ZIP_FORMATS = frozenset({"docx", "xlsx", "pptx"})
_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_PAGE_COUNT = re.compile(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)|/Count\s+(\d+)[^>]*?/Type\s*/Pages\b")
#: Keys whose values are rendered into the prompt as JSON text.
_JSON_KEYS = frozenset({"tools", "toolConfig", "input", "json", "parameters", "input_schema", "inputSchema",
                        "arguments", "functions"})
#: Keys whose values the model never reads as input tokens.
_SETTINGS = frozenset({
    "inferenceConfig", "additionalModelRequestFields", "additionalModelResponseFieldPaths", "guardrailConfig",
    "performanceConfig", "promptVariables", "requestMetadata", "anthropic_version", "anthropic_beta",
    "max_tokens", "max_tokens_to_sample", "max_gen_len", "max_new_tokens", "max_completion_tokens", "temperature",
    "top_p", "top_k", "topP", "topK", "stop_sequences", "stopSequences", "stop", "seed", "textGenerationConfig",
    "schemaVersion", "cachePoint", "cache_control", "thinking", "reasoning_effort", "toolChoice", "tool_choice",
})


def input_token_bound(document: Any, served_family: str) -> int:
    """At most how many input tokens (input + cache read + cache write) `document`, a
    request body in any family's shape or Converse's, is billed for on a model of
    `served_family` (which sets the image formula) — see the module docstring."""
    try:
        return _Counter(served_family).count(document)
    except Exception:  # a bound must never fail a request: count the body's size instead
        return REQUEST_TOKENS + len(repr(document).encode("utf-8", "surrogatepass"))


class _Counter:
    __slots__ = ("_image", "_tools")

    def __init__(self, family: str) -> None:
        self._image = IMAGE_TOKENS.get(family, _ANY_IMAGE)
        self._tools = False

    def count(self, document: Any) -> int:
        total = REQUEST_TOKENS + self._walk(document)
        return total + (TOOL_PROMPT_TOKENS if self._tools else 0)

    def _walk(self, root: Any) -> int:
        # A JSON document holds dicts, lists and scalars only: exact type checks, no ABCs
        # (this runs on every request a quota admits: bench it before making it general).
        total = 0
        stack: list[tuple[Any, str]] = [(root, "")]
        while stack:  # iterative: a deeply nested body cannot exhaust the stack
            node, key = stack.pop()
            kind = type(node)
            if kind is str:
                total += self._string(node, key)
            elif kind is dict:
                media = (self._media(node) if "type" in node or "image" in node or "document" in node
                         or "video" in node else None)
                if media is not None:
                    total += media + PART_TOKENS
                    continue
                total += PART_TOKENS
                for name, value in node.items():
                    name = str(name)
                    if name in _SETTINGS:
                        continue
                    total += _utf8_size(name)
                    if name in _JSON_KEYS:
                        self._tools |= name in ("tools", "toolConfig", "functions")
                        total += _utf8_size(json.dumps(value, ensure_ascii=False))
                        continue
                    stack.append((value, name))
            elif kind is list:
                stack.extend((item, key) for item in node)
            elif isinstance(node, Mapping | list | str):  # not from json.loads: the general path
                stack.append((dict(node) if isinstance(node, Mapping) else list(node) if isinstance(node, list)
                              else str(node), key))
        return total

    def _string(self, text: str, key: str) -> int:
        if key in ("images", "inputImage") or text.startswith("data:image/"):
            return self._image
        return _utf8_size(text)

    def _media(self, block: Mapping[str, Any]) -> int | None:
        """Tokens of an image, document or video block (Converse, Nova, Anthropic, OpenAI shapes)."""
        kind = block.get("type")
        # Any value under a media key counts as the medium: a malformed one may still be billed.
        if "image" in block or kind in ("image", "image_url", "input_image"):
            return self._image
        if "video" in block or kind == "video":
            return VIDEO_TOKENS
        if "document" in block:
            inner = block["document"]
            return _document(inner.get("format"), inner.get("source")) if isinstance(inner, Mapping) else (
                _document(None, None))
        if kind == "document":
            source = block.get("source")
            media_type = source.get("media_type") if isinstance(source, Mapping) else None
            return _document(media_type, source)
        return None


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _document(fmt: Any, source: Any) -> int:
    fmt = str(fmt or "").lower().rsplit("/", 1)[-1]
    if not isinstance(source, Mapping):
        return MAX_DOCUMENT_TOKENS
    text = source.get("text")
    if isinstance(text, str):
        return _utf8_size(text)
    content = source.get("content")
    if isinstance(content, list):
        return _Counter("").count(content)
    data = _bytes(source.get("bytes", source.get("data")))
    if data is None:  # in S3, or a shape this does not know
        return MAX_DOCUMENT_TOKENS
    if fmt == "pdf":
        return _pdf_pages(data) * PDF_PAGE_TOKENS
    if fmt in _ZIP_FORMATS:
        return _unzipped_size(data)
    return len(data)  # text formats, and binary ones whose text their bytes hold


def _bytes(value: Any) -> bytes | None:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=False)
        except (binascii.Error, ValueError):
            return value.encode("utf-8", "surrogatepass")
    return None


def _pdf_pages(data: bytes) -> int:
    counts = [int(a or b) for a, b in _PAGE_COUNT.findall(data)]
    pages = max(counts, default=0) or len(_PAGE.findall(data))
    return pages or PDF_MAX_PAGES


def _unzipped_size(data: bytes) -> int:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError):
        return len(data)
