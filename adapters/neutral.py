"""The neutral form that cross-family translation goes through.

A family that can be a fallback source or target converts its InvokeModel
bodies to and from these types (`request_to_neutral`, `request_from_neutral`,
`response_to_neutral`, `response_from_neutral`) and its stream chunks to and
from `StreamEvent`s (`StreamDecoder`, `StreamEncoder`). `adapters.translate`
chains two families through them. Only what at least two families can express
is here; each family refuses (`TranslationError`) what it cannot carry.

Errors::

    ValueError
     └── TranslationError      .family, .field — the family and the field that cannot be carried
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from adapters.usage import Usage

__all__ = [
    "TranslationError",
    "Text", "Image", "ToolUse", "ToolResult", "Block", "Message", "Tool", "ToolChoice",
    "NeutralRequest", "NeutralResponse", "STOP_REASONS",
    "MessageStarted", "TextDelta", "ToolUseStarted", "ToolInputDelta", "BlockStopped",
    "MessageStopped", "UsageReported", "StreamEnded", "StreamEvent",
    "mapping_at", "list_at", "str_at", "optional_number", "optional_count", "string_list", "merged_text",
]


class TranslationError(ValueError):
    """A request or response that cannot be carried to (or read from) a family."""

    def __init__(self, family: str, field: str, reason: str):
        super().__init__(f"{family}: cannot translate {field}: {reason}")
        self.family = family
        self.field = field
        self.reason = reason


# --- request and response -------------------------------------------------------------
# `cache` on a block means "a prompt-cache checkpoint follows this block"
# (Anthropic `cache_control` on the block, Nova a `cachePoint` block after it).


@dataclass(frozen=True, slots=True)
class Text:
    text: str
    cache: bool = False


@dataclass(frozen=True, slots=True)
class Image:
    media_type: str  # "image/png"
    data: str  # base64, as both Anthropic and Nova's InvokeModel carry it
    cache: bool = False


@dataclass(frozen=True, slots=True)
class ToolUse:
    id: str
    name: str
    input: Any  # the decoded JSON arguments
    cache: bool = False


@dataclass(frozen=True, slots=True)
class ToolResult:
    tool_use_id: str
    content: tuple[Text | Image, ...]
    is_error: bool = False
    cache: bool = False


Block = Text | Image | ToolUse | ToolResult


@dataclass(frozen=True, slots=True)
class Message:
    role: Literal["user", "assistant"]
    content: tuple[Block, ...]


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str | None
    input_schema: Mapping[str, Any]
    cache: bool = False


@dataclass(frozen=True, slots=True)
class ToolChoice:
    kind: Literal["auto", "any", "tool", "none"]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class NeutralRequest:
    messages: tuple[Message, ...]
    system: tuple[Text, ...] = ()
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: tuple[str, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None


#: Neutral stop reasons: Anthropic's names, with `content_filtered` for
#: Anthropic `refusal` / Nova `content_filtered`, `guardrail_intervened`.
STOP_REASONS = frozenset(
    {"end_turn", "max_tokens", "stop_sequence", "tool_use", "content_filtered", "model_context_window_exceeded"}
)


@dataclass(frozen=True, slots=True)
class NeutralResponse:
    content: tuple[Text | ToolUse, ...]
    stop_reason: str
    usage: Usage
    stop_sequence: str | None = None
    #: Top-level `amazon-bedrock-*` keys Bedrock added to the body (guardrail action, trace).
    bedrock_fields: Mapping[str, Any] = field(default_factory=dict)


# --- stream events --------------------------------------------------------------------
# A target family's `StreamDecoder.decode(chunk)` yields these; the client family's
# `StreamEncoder.encode(event)` turns each into zero or more client chunks. `block`
# is the target's own content-block index; encoders number the client's blocks.


@dataclass(frozen=True, slots=True)
class MessageStarted:
    usage: Usage | None = None  # what the upstream knew at the start (Claude, Llama: input tokens)


@dataclass(frozen=True, slots=True)
class TextDelta:
    block: int
    text: str


@dataclass(frozen=True, slots=True)
class ToolUseStarted:
    block: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolInputDelta:
    block: int
    partial_json: str


@dataclass(frozen=True, slots=True)
class BlockStopped:
    block: int


@dataclass(frozen=True, slots=True)
class MessageStopped:
    stop_reason: str
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class UsageReported:
    """Cumulative counts: a later value replaces an earlier one; `None` = not reported."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None

    def applied_to(self, usage: Usage) -> Usage:
        return usage.merged(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_read_tokens=self.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens,
        )


@dataclass(frozen=True, slots=True)
class StreamEnded:
    pass


StreamEvent = (
    MessageStarted | TextDelta | ToolUseStarted | ToolInputDelta | BlockStopped
    | MessageStopped | UsageReported | StreamEnded
)


# --- readers for client bodies: a malformed field is refused, naming it ---------------


def mapping_at(value: object, family: str, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TranslationError(family, field, "expected an object")
    return value


def list_at(value: object, family: str, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise TranslationError(family, field, "expected a list")
    return value


def str_at(value: object, family: str, field: str) -> str:
    if not isinstance(value, str):
        raise TranslationError(family, field, "expected a string")
    return value


def optional_number(value: object, family: str, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TranslationError(family, field, "expected a number")
    return value


def optional_count(value: object, family: str, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TranslationError(family, field, "expected a non-negative integer")
    return value


def string_list(value: object, family: str, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(str_at(item, family, f"{field}[{i}]") for i, item in enumerate(list_at(value, family, field)))


def merged_text(blocks: list[Text | ToolUse]) -> tuple[Text | ToolUse, ...]:
    """Adjacent text blocks as one: Nova splits a guardrail-masked answer into one
    block per word (openllmetry `test_nova_invoke_stream.yaml`), Claude never does."""
    out: list[Text | ToolUse] = []
    for block in blocks:
        if isinstance(block, Text) and out and isinstance(out[-1], Text):
            out[-1] = Text(out[-1].text + block.text)
        else:
            out.append(block)
    return tuple(out)
