"""Anthropic Claude on InvokeModel: the Messages API, and legacy Text Completions.

Messages bodies carry `usage.{input_tokens, output_tokens,
cache_read_input_tokens, cache_creation_input_tokens}`; `input_tokens` excludes
the cached tokens, as Bedrock's headers do. In a stream, `message_start` gives
input and cache counts (and a placeholder `output_tokens` of 1 or 2), and
`message_delta.usage.output_tokens` is cumulative: the last one is the total.
Legacy completions (`claude-v2`, `claude-instant-v1`) carry no usage at all;
Bedrock's headers or invocation metrics are the only source (BEDROCK_WIRE.md §4).

Translation (fallback to or from another family, see `adapters.translate`):
Messages bodies and stream chunks to and from the neutral form. Extended
thinking (`thinking`, thinking blocks) and Anthropic-only hints are dropped;
server tools, documents, URL images and structured output are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters._fields import child, token_count, usage_or_none
from adapters.anthropic_fields import (
    STOP_TO_NEUTRAL,
    message_id,
    model_name,
    stop_reason,
    usage_fields,
    usage_from_fields,
)
from adapters.neutral import (
    Block,
    Image,
    Message,
    NeutralRequest,
    NeutralResponse,
    Text,
    Tool,
    ToolChoice,
    ToolResult,
    ToolUse,
    TranslationError,
    list_at,
    mapping_at,
    merged_text,
    optional_count,
    optional_number,
    str_at,
    string_list,
)
from adapters.usage import Usage

__all__ = [
    "MODEL_PREFIXES", "usage_from_body", "usage_from_chunk", "output_text",
    "request_to_neutral", "request_from_neutral", "response_to_neutral", "response_from_neutral",
    "StreamDecoder", "StreamEncoder", "model_name",
]

MODEL_PREFIXES = ("anthropic.",)


def usage_from_body(body: Mapping[str, Any]) -> Usage | None:
    return usage_from_fields(child(body, "usage"))


def usage_from_chunk(chunk: Mapping[str, Any], usage: Usage | None) -> Usage | None:
    kind = chunk.get("type")
    if kind == "message_start":
        return usage_from_fields(child(child(chunk, "message"), "usage")) or usage
    if kind == "message_delta":
        delta = child(chunk, "usage")
        # Cumulative counts: a later value replaces the earlier one. Newer
        # deltas may repeat input/cache counts too; take whatever is present.
        # (Read and passed on one by one: this runs once per stream, issue #20.)
        input_tokens = token_count(delta.get("input_tokens"))
        output_tokens = token_count(delta.get("output_tokens"))
        cache_read = token_count(delta.get("cache_read_input_tokens"))
        cache_write = token_count(delta.get("cache_creation_input_tokens"))
        if usage is None:  # what `Usage().merged(...)` makes, without the empty one
            return usage_or_none(input_tokens, output_tokens, cache_read, cache_write)
        return usage.merged(input_tokens=input_tokens, output_tokens=output_tokens,
                            cache_read_tokens=cache_read, cache_write_tokens=cache_write)
    return usage


def output_text(chunk: Mapping[str, Any]) -> str:
    if chunk.get("type") == "content_block_delta":
        delta = child(chunk, "delta")
        for key in ("text", "partial_json", "thinking"):
            text = delta.get(key)
            if isinstance(text, str):
                return text
        return ""
    completion = chunk.get("completion")
    return completion if isinstance(completion, str) else ""


# --- translation -----------------------------------------------------------------------

_FAMILY = "anthropic"
ANTHROPIC_VERSION = "bedrock-2023-05-31"
#: `max_tokens` is required by Claude; when the client's family left it to the
#: model, 4096 is accepted by every Claude on Bedrock (Claude 3 Haiku's limit).
DEFAULT_MAX_TOKENS = 4096
# Fields not read below are dropped: their loss leaves an answer of the same shape
# (`anthropic_version`, `anthropic_beta`, `metadata`, `thinking`, `service_tier`,
# `context_management`). These change what the answer must be:
_REFUSED_FIELDS = {
    "output_format": "structured output is Claude-only",
    "container": "code-execution containers are Claude-only",
    "mcp_servers": "MCP connectors are Claude-only",
}
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_EPHEMERAL = {"type": "ephemeral"}


def _block_to_neutral(block: object, where: str) -> Block | None:
    if isinstance(block, str):
        return Text(block)
    block = mapping_at(block, _FAMILY, where)
    kind = block.get("type")
    cache = bool(block.get("cache_control"))
    if kind == "text":
        return Text(str_at(block.get("text"), _FAMILY, f"{where}.text"), cache)
    if kind == "image":
        source = mapping_at(block.get("source"), _FAMILY, f"{where}.source")
        media_type = source.get("media_type")
        if source.get("type") != "base64" or not isinstance(media_type, str) or media_type not in _IMAGE_TYPES:
            raise TranslationError(_FAMILY, f"{where}.source", "only base64 jpeg/png/gif/webp images translate")
        return Image(media_type, str_at(source.get("data"), _FAMILY, f"{where}.source.data"), cache)
    if kind == "tool_use":
        return ToolUse(
            str_at(block.get("id"), _FAMILY, f"{where}.id"),
            str_at(block.get("name"), _FAMILY, f"{where}.name"),
            block.get("input", {}),
            cache,
        )
    if kind == "tool_result":
        content = block.get("content", ())
        items = [content] if isinstance(content, str) else list_at(content, _FAMILY, f"{where}.content")
        parts = [_block_to_neutral(item, f"{where}.content[{i}]") for i, item in enumerate(items)]
        if not all(isinstance(part, Text | Image) for part in parts):
            raise TranslationError(_FAMILY, f"{where}.content", "a tool result may hold only text and images")
        return ToolResult(
            str_at(block.get("tool_use_id"), _FAMILY, f"{where}.tool_use_id"),
            tuple(part for part in parts if isinstance(part, Text | Image)),
            bool(block.get("is_error", False)),
            cache,
        )
    if kind in ("thinking", "redacted_thinking"):
        return None  # earlier turns' reasoning: signed for Claude only, not needed by others
    raise TranslationError(_FAMILY, f"{where}.type", f"{kind!r} blocks exist only in Claude")


def _content_to_neutral(content: object, where: str) -> tuple[Block, ...]:
    items = [content] if isinstance(content, str) else list_at(content, _FAMILY, where)
    blocks = (_block_to_neutral(item, f"{where}[{i}]") for i, item in enumerate(items))
    return tuple(block for block in blocks if block is not None)


def _tool_to_neutral(tool: object, where: str) -> Tool:
    tool = mapping_at(tool, _FAMILY, where)
    if tool.get("type", "custom") != "custom":
        raise TranslationError(_FAMILY, f"{where}.type", f"server tool {tool.get('type')!r} is Claude-only")
    description = tool.get("description")
    return Tool(
        str_at(tool.get("name"), _FAMILY, f"{where}.name"),
        description if isinstance(description, str) else None,
        mapping_at(tool.get("input_schema"), _FAMILY, f"{where}.input_schema"),
        bool(tool.get("cache_control")),
    )


def _tool_choice_to_neutral(choice: object) -> ToolChoice | None:
    if choice is None:
        return None
    choice = mapping_at(choice, _FAMILY, "tool_choice")
    kind = choice.get("type")
    if kind == "tool":
        return ToolChoice("tool", str_at(choice.get("name"), _FAMILY, "tool_choice.name"))
    if kind in ("auto", "any", "none"):
        return ToolChoice(kind)
    raise TranslationError(_FAMILY, "tool_choice.type", f"unknown tool choice {kind!r}")


def request_to_neutral(body: Mapping[str, Any]) -> NeutralRequest:
    """A Messages request; legacy Text Completions (`prompt`) do not translate."""
    for name, reason in _REFUSED_FIELDS.items():
        if body.get(name) is not None:
            raise TranslationError(_FAMILY, name, reason)
    if "prompt" in body and "messages" not in body:
        raise TranslationError(_FAMILY, "prompt", "legacy Text Completions do not translate")
    messages = []
    for i, message in enumerate(list_at(body.get("messages"), _FAMILY, "messages")):
        message = mapping_at(message, _FAMILY, f"messages[{i}]")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise TranslationError(_FAMILY, f"messages[{i}].role", f"unknown role {role!r}")
        messages.append(Message(role, _content_to_neutral(message.get("content"), f"messages[{i}].content")))
    system = body.get("system")
    system_blocks = _content_to_neutral(system, "system") if system not in (None, "") else ()
    if not all(isinstance(block, Text) for block in system_blocks):
        raise TranslationError(_FAMILY, "system", "a system prompt may hold only text")
    return NeutralRequest(
        messages=tuple(messages),
        system=tuple(block for block in system_blocks if isinstance(block, Text)),
        max_tokens=optional_count(body.get("max_tokens"), _FAMILY, "max_tokens"),
        temperature=optional_number(body.get("temperature"), _FAMILY, "temperature"),
        top_p=optional_number(body.get("top_p"), _FAMILY, "top_p"),
        top_k=optional_count(body.get("top_k"), _FAMILY, "top_k"),
        stop_sequences=string_list(body.get("stop_sequences"), _FAMILY, "stop_sequences"),
        tools=tuple(
            _tool_to_neutral(tool, f"tools[{i}]")
            for i, tool in enumerate(list_at(body.get("tools") or [], _FAMILY, "tools"))
        ),
        tool_choice=_tool_choice_to_neutral(body.get("tool_choice")),
    )


def _cached(block: dict[str, Any], cache: bool) -> dict[str, Any]:
    if cache:
        block["cache_control"] = dict(_EPHEMERAL)
    return block


def _block_from_neutral(block: Block) -> dict[str, Any]:
    if isinstance(block, Text):
        return _cached({"type": "text", "text": block.text}, block.cache)
    if isinstance(block, Image):
        source = {"type": "base64", "media_type": block.media_type, "data": block.data}
        return _cached({"type": "image", "source": source}, block.cache)
    if isinstance(block, ToolUse):
        return _cached({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}, block.cache)
    out: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": block.tool_use_id,
        "content": [_block_from_neutral(part) for part in block.content],
    }
    if block.is_error:
        out["is_error"] = True
    return _cached(out, block.cache)


def request_from_neutral(request: NeutralRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "anthropic_version": ANTHROPIC_VERSION,
        "max_tokens": request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS,
    }
    if len(request.system) == 1 and not request.system[0].cache:
        body["system"] = request.system[0].text
    elif request.system:
        body["system"] = [_block_from_neutral(block) for block in request.system]
    body["messages"] = [
        {"role": message.role, "content": [_block_from_neutral(block) for block in message.content]}
        for message in request.messages
    ]
    # Claude 4.5 models refuse temperature and top_p together (ValidationException,
    # 2025-10); temperature is the knob every sampler has, so it wins.
    top_p = request.top_p if request.temperature is None else None
    for key, value in (("temperature", request.temperature), ("top_p", top_p), ("top_k", request.top_k)):
        if value is not None:
            body[key] = value
    if request.stop_sequences:
        body["stop_sequences"] = list(request.stop_sequences)
    if request.tools:
        body["tools"] = [
            _cached(
                {"name": tool.name, **({"description": tool.description} if tool.description else {}),
                 "input_schema": dict(tool.input_schema)},
                tool.cache,
            )
            for tool in request.tools
        ]
    if request.tool_choice is not None:
        choice: dict[str, Any] = {"type": request.tool_choice.kind}
        if request.tool_choice.name is not None:
            choice["name"] = request.tool_choice.name
        body["tool_choice"] = choice
    return body


def _bedrock_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key.startswith("amazon-bedrock-")}


def response_to_neutral(body: Mapping[str, Any]) -> NeutralResponse:
    content: list[Text | ToolUse] = []
    for i, block in enumerate(list_at(body.get("content", []), _FAMILY, "content")):
        block = mapping_at(block, _FAMILY, f"content[{i}]")
        if block.get("type") == "text":
            content.append(Text(str_at(block.get("text"), _FAMILY, f"content[{i}].text")))
        elif block.get("type") == "tool_use":
            content.append(ToolUse(str(block.get("id")), str(block.get("name")), block.get("input", {})))
        # thinking, redacted_thinking: the client's family did not ask for Claude's reasoning
    stop_sequence = body.get("stop_sequence")
    return NeutralResponse(
        content=merged_text(content),
        stop_reason=STOP_TO_NEUTRAL.get(str(body.get("stop_reason")), "end_turn"),
        usage=usage_from_body(body) or Usage(),
        stop_sequence=stop_sequence if isinstance(stop_sequence, str) else None,
        bedrock_fields=_bedrock_fields(body),
    )


def response_from_neutral(response: NeutralResponse, model_id: str) -> dict[str, Any]:
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model_name(model_id),
        "content": [_block_from_neutral(block) for block in response.content],
        "stop_reason": stop_reason(response.stop_reason),
        "stop_sequence": response.stop_sequence,
        "usage": usage_fields(response.usage),
        **response.bedrock_fields,
    }


# The stream codec lives in its own module; it is part of this family's interface.
from adapters.anthropic_stream import StreamDecoder, StreamEncoder  # noqa: E402
