"""Amazon Nova on InvokeModel (`schemaVersion: messages-v1`).

The body's `usage` uses Converse's keys, but only the legacy cache names
(`cacheReadInputTokenCount`). A guardrail that masks the output leaves only
`{"inputTokens": 30}` in the body (openllmetry `test_nova_completion.yaml`,
2025-02); the headers still hold the full counts, which is why they win.
The stream wraps Converse-shaped events: `{"contentBlockDelta": {…}}`, …,
`{"metadata": {"usage": {…}}, "amazon-bedrock-invocationMetrics": {…}}`.

Translation (see `adapters.translate`): the messages-v1 body shares the
neutral form's shape (text, base64 images, `toolUse`, `toolResult`,
`cachePoint`); reasoning is dropped, video, audio, documents and S3 sources are
refused (the other families cannot take them on InvokeModel).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from adapters._fields import child, first_count
from adapters.converse import delta_text, usage_from_token_usage
from adapters.neutral import (
    Block,
    BlockStopped,
    Image,
    Message,
    MessageStarted,
    MessageStopped,
    NeutralRequest,
    NeutralResponse,
    StreamEnded,
    StreamEvent,
    Text,
    TextDelta,
    Tool,
    ToolChoice,
    ToolInputDelta,
    ToolResult,
    ToolUse,
    ToolUseStarted,
    TranslationError,
    UsageReported,
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
    "StreamDecoder", "StreamEncoder",
]

MODEL_PREFIXES = ("amazon.nova-",)


def usage_from_body(body: Mapping[str, Any]) -> Usage | None:
    return usage_from_token_usage(child(body, "usage"))


def usage_from_chunk(chunk: Mapping[str, Any], usage: Usage | None) -> Usage | None:
    metadata = child(chunk, "metadata")
    if not metadata:
        return usage
    return usage_from_token_usage(child(metadata, "usage")) or usage


def output_text(chunk: Mapping[str, Any]) -> str:
    return delta_text(child(child(chunk, "contentBlockDelta"), "delta"))



# --- translation -----------------------------------------------------------------------

_FAMILY = "nova"
_STOP_TO_NEUTRAL = {
    "end_turn": "end_turn", "max_tokens": "max_tokens", "stop_sequence": "stop_sequence",
    "tool_use": "tool_use", "content_filtered": "content_filtered",
    "guardrail_intervened": "content_filtered",
    "model_context_window_exceeded": "model_context_window_exceeded",
}
_IMAGE_FORMATS = {"image/jpeg": "jpeg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}
_MEDIA_TYPES = {fmt: media for media, fmt in _IMAGE_FORMATS.items()}
_CACHE_POINT = {"cachePoint": {"type": "default"}}


def _image_to_neutral(image: object, where: str) -> Image:
    image = mapping_at(image, _FAMILY, where)
    data = child(image, "source").get("bytes")
    media_type = _MEDIA_TYPES.get(str(image.get("format")))
    if media_type is None or not isinstance(data, str):
        raise TranslationError(_FAMILY, f"{where}.source", "only base64 jpeg/png/gif/webp images translate")
    return Image(media_type, data)


def _block_to_neutral(block: Mapping[str, Any], where: str) -> Block | None:
    if "text" in block:
        return Text(str_at(block["text"], _FAMILY, f"{where}.text"))
    if "image" in block:
        return _image_to_neutral(block["image"], f"{where}.image")
    if "toolUse" in block:
        use = mapping_at(block["toolUse"], _FAMILY, f"{where}.toolUse")
        return ToolUse(
            str_at(use.get("toolUseId"), _FAMILY, f"{where}.toolUse.toolUseId"),
            str_at(use.get("name"), _FAMILY, f"{where}.toolUse.name"),
            use.get("input", {}),
        )
    if "toolResult" in block:
        result = mapping_at(block["toolResult"], _FAMILY, f"{where}.toolResult")
        parts: list[Text | Image] = []
        for i, part in enumerate(list_at(result.get("content", []), _FAMILY, f"{where}.toolResult.content")):
            part = mapping_at(part, _FAMILY, f"{where}.toolResult.content[{i}]")
            if "text" in part:
                parts.append(Text(str_at(part["text"], _FAMILY, f"{where}.toolResult.content[{i}].text")))
            elif "json" in part:
                parts.append(Text(json.dumps(part["json"], separators=(",", ":"))))
            elif "image" in part:
                parts.append(_image_to_neutral(part["image"], f"{where}.toolResult.content[{i}].image"))
            else:
                raise TranslationError(_FAMILY, f"{where}.toolResult.content[{i}]", "only text, json and images")
        return ToolResult(
            str_at(result.get("toolUseId"), _FAMILY, f"{where}.toolResult.toolUseId"),
            tuple(parts),
            result.get("status") == "error",
        )
    if "reasoningContent" in block:
        return None  # earlier turns' reasoning: not needed by other families
    kind = next(iter(block), "?")
    raise TranslationError(_FAMILY, f"{where}.{kind}", f"{kind!r} blocks do not translate")


def _blocks_to_neutral(items: object, where: str) -> list[Any]:
    """Blocks, with a `cachePoint` folded into the block before it; `Tool`s for `tools`."""
    out: list[Any] = []
    for i, item in enumerate(list_at(items, _FAMILY, where)):
        item = mapping_at(item, _FAMILY, f"{where}[{i}]")
        if "cachePoint" in item:
            if out:
                out[-1] = replace(out[-1], cache=True)
            continue
        if "toolSpec" in item:
            spec = mapping_at(item["toolSpec"], _FAMILY, f"{where}[{i}].toolSpec")
            description = spec.get("description")
            out.append(Tool(
                str_at(spec.get("name"), _FAMILY, f"{where}[{i}].toolSpec.name"),
                description if isinstance(description, str) else None,
                mapping_at(child(spec, "inputSchema").get("json"), _FAMILY, f"{where}[{i}].toolSpec.inputSchema.json"),
            ))
            continue
        block = _block_to_neutral(item, f"{where}[{i}]")
        if block is not None:
            out.append(block)
    return out


def _tool_choice_to_neutral(choice: Mapping[str, Any]) -> ToolChoice | None:
    if not choice:
        return None
    if "tool" in choice:
        return ToolChoice("tool", str_at(child(choice, "tool").get("name"), _FAMILY, "toolConfig.toolChoice.tool.name"))
    if "any" in choice:
        return ToolChoice("any")
    if "auto" in choice:
        return ToolChoice("auto")
    raise TranslationError(_FAMILY, "toolConfig.toolChoice", "unknown tool choice")


def request_to_neutral(body: Mapping[str, Any]) -> NeutralRequest:
    messages = []
    for i, message in enumerate(list_at(body.get("messages"), _FAMILY, "messages")):
        message = mapping_at(message, _FAMILY, f"messages[{i}]")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise TranslationError(_FAMILY, f"messages[{i}].role", f"unknown role {role!r}")
        content = _blocks_to_neutral(message.get("content"), f"messages[{i}].content")
        if any(isinstance(block, Tool) for block in content):
            raise TranslationError(_FAMILY, f"messages[{i}].content", "a toolSpec belongs in toolConfig.tools")
        messages.append(Message(role, tuple(content)))
    system = _blocks_to_neutral(body.get("system") or [], "system")
    if not all(isinstance(block, Text) for block in system):
        raise TranslationError(_FAMILY, "system", "a system prompt may hold only text")
    config = mapping_at(body.get("inferenceConfig") or {}, _FAMILY, "inferenceConfig")
    tool_config = mapping_at(body.get("toolConfig") or {}, _FAMILY, "toolConfig")
    tools = _blocks_to_neutral(tool_config.get("tools") or [], "toolConfig.tools")
    if not all(isinstance(tool, Tool) for tool in tools):
        raise TranslationError(_FAMILY, "toolConfig.tools", "expected toolSpec entries")

    def setting(camel: str, snake: str) -> Any:
        return config.get(camel, config.get(snake))

    return NeutralRequest(
        messages=tuple(messages),
        system=tuple(system),
        max_tokens=optional_count(setting("maxTokens", "max_new_tokens"), _FAMILY, "inferenceConfig.maxTokens"),
        temperature=optional_number(config.get("temperature"), _FAMILY, "inferenceConfig.temperature"),
        top_p=optional_number(setting("topP", "top_p"), _FAMILY, "inferenceConfig.topP"),
        top_k=optional_count(setting("topK", "top_k"), _FAMILY, "inferenceConfig.topK"),
        stop_sequences=string_list(
            setting("stopSequences", "stop_sequences"), _FAMILY, "inferenceConfig.stopSequences"
        ),
        tools=tuple(tools),
        tool_choice=_tool_choice_to_neutral(child(tool_config, "toolChoice")),
    )


def _image_from_neutral(image: Image) -> dict[str, Any]:
    return {"image": {"format": _IMAGE_FORMATS[image.media_type], "source": {"bytes": image.data}}}


def _blocks_from_neutral(blocks: tuple[Block, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, Text):
            out.append({"text": block.text})
        elif isinstance(block, Image):
            out.append(_image_from_neutral(block))
        elif isinstance(block, ToolUse):
            out.append({"toolUse": {"toolUseId": block.id, "name": block.name, "input": block.input}})
        else:
            result: dict[str, Any] = {
                "toolUseId": block.tool_use_id,
                "content": [
                    {"text": part.text} if isinstance(part, Text) else _image_from_neutral(part)
                    for part in block.content
                ],
            }
            if block.is_error:
                result["status"] = "error"
            out.append({"toolResult": result})
        if block.cache:
            out.append(dict(_CACHE_POINT))
    return out


def request_from_neutral(request: NeutralRequest) -> dict[str, Any]:
    # Bedrock refuses two consecutive turns of one role; Claude merges them itself.
    messages: list[Message] = []
    for message in request.messages:
        if messages and messages[-1].role == message.role:
            messages[-1] = Message(message.role, messages[-1].content + message.content)
        else:
            messages.append(message)
    body: dict[str, Any] = {"schemaVersion": "messages-v1"}
    if request.system:
        body["system"] = _blocks_from_neutral(request.system)
    body["messages"] = [
        {"role": message.role, "content": _blocks_from_neutral(message.content)} for message in messages
    ]
    config: dict[str, Any] = {}
    for key, value in (
        ("maxTokens", request.max_tokens), ("temperature", request.temperature),
        ("topP", request.top_p), ("topK", request.top_k),
    ):
        if value is not None:
            config[key] = value
    if request.stop_sequences:
        config["stopSequences"] = list(request.stop_sequences)
    if config:
        body["inferenceConfig"] = config
    choice = request.tool_choice
    if request.tools and not (choice is not None and choice.kind == "none"):
        tools: list[dict[str, Any]] = []
        for tool in request.tools:
            spec: dict[str, Any] = {"name": tool.name}
            if tool.description:
                spec["description"] = tool.description
            spec["inputSchema"] = {"json": dict(tool.input_schema)}
            tools.append({"toolSpec": spec})
            if tool.cache:
                tools.append(dict(_CACHE_POINT))
        body["toolConfig"] = {"tools": tools}
        if choice is not None:
            body["toolConfig"]["toolChoice"] = {choice.kind: {"name": choice.name} if choice.kind == "tool" else {}}
    elif choice is not None and choice.kind == "none" and any(
        isinstance(block, ToolUse | ToolResult) for message in messages for block in message.content
    ):
        # Nova has no "none" choice and needs the tools declared once the history uses them.
        raise TranslationError(_FAMILY, "tool_choice", "Nova cannot forbid tool calls in a conversation using tools")
    return body


def response_to_neutral(body: Mapping[str, Any]) -> NeutralResponse:
    content: list[Text | ToolUse] = []
    message = child(child(body, "output"), "message")
    for i, block in enumerate(list_at(message.get("content", []), _FAMILY, "output.message.content")):
        neutral = _block_to_neutral(mapping_at(block, _FAMILY, f"output.message.content[{i}]"),
                                    f"output.message.content[{i}]")
        if isinstance(neutral, Text | ToolUse):
            content.append(neutral)
    return NeutralResponse(
        content=merged_text(content),
        stop_reason=_STOP_TO_NEUTRAL.get(str(body.get("stopReason")), "end_turn"),
        usage=usage_from_body(body) or Usage(),
        bedrock_fields={key: value for key, value in body.items() if key.startswith("amazon-bedrock-")},
    )


def _usage_fields(usage: Usage, total: bool) -> dict[str, int]:
    fields = {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens}
    if total:  # bodies carry totalTokens, the stream's metadata does not (recordings)
        fields["totalTokens"] = usage.total_tokens
    fields["cacheReadInputTokenCount"] = usage.cache_read_tokens
    fields["cacheWriteInputTokenCount"] = usage.cache_write_tokens
    return fields


def response_from_neutral(response: NeutralResponse, model_id: str) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": _blocks_from_neutral(response.content)}},
        "stopReason": response.stop_reason,
        "usage": _usage_fields(response.usage, total=True),
        **response.bedrock_fields,
    }


class StreamDecoder:
    """Nova stream chunks → neutral events (reasoning blocks are skipped)."""

    def __init__(self) -> None:
        self._skipped: set[int] = set()

    def decode(self, chunk: Mapping[str, Any]) -> list[StreamEvent]:
        if "messageStart" in chunk:
            return [MessageStarted()]
        if "contentBlockStart" in chunk:
            event = child(chunk, "contentBlockStart")
            index = event.get("contentBlockIndex")
            use = child(child(event, "start"), "toolUse")
            if not isinstance(index, int):
                return []
            if use:
                return [ToolUseStarted(index, str(use.get("toolUseId")), str(use.get("name")))]
            self._skipped.add(index)
            return []
        if "contentBlockDelta" in chunk:
            event = child(chunk, "contentBlockDelta")
            index, delta = event.get("contentBlockIndex"), child(event, "delta")
            if not isinstance(index, int) or index in self._skipped:
                return []
            if isinstance(delta.get("text"), str):
                return [TextDelta(index, delta["text"])]
            tool_input = child(delta, "toolUse").get("input")
            if isinstance(tool_input, str):
                return [ToolInputDelta(index, tool_input)]
            self._skipped.add(index)  # reasoningContent
            return []
        if "contentBlockStop" in chunk:
            index = child(chunk, "contentBlockStop").get("contentBlockIndex")
            return [BlockStopped(index)] if isinstance(index, int) and index not in self._skipped else []
        if "messageStop" in chunk:
            reason = str(child(chunk, "messageStop").get("stopReason"))
            return [MessageStopped(_STOP_TO_NEUTRAL.get(reason, "end_turn"))]
        if "metadata" in chunk:
            usage = child(child(chunk, "metadata"), "usage")
            return [
                UsageReported(
                    input_tokens=first_count(usage, "inputTokens"),
                    output_tokens=first_count(usage, "outputTokens"),
                    cache_read_tokens=first_count(usage, "cacheReadInputTokenCount", "cacheReadInputTokens"),
                    cache_write_tokens=first_count(usage, "cacheWriteInputTokenCount", "cacheWriteInputTokens"),
                ),
                StreamEnded(),
            ]
        return []


class StreamEncoder:
    """Neutral events → Nova's stream: `messageStart`, `contentBlockDelta`…
    (`contentBlockStart` only for tool use), `contentBlockStop`, `messageStop`,
    then `metadata` with the usage, the last chunk."""

    def __init__(self, model_id: str):
        self._usage = Usage()
        self._indexes: dict[int, int] = {}  # upstream block → client block
        self._open: set[int] = set()
        self._started = self._stopped = self._ended = False

    def encode(self, event: StreamEvent) -> list[dict[str, Any]]:
        if self._ended:
            return []
        out: list[dict[str, Any]] = []
        if not self._started and not isinstance(event, UsageReported):
            self._started = True
            if isinstance(event, MessageStarted) and event.usage is not None:
                self._usage = event.usage
            out.append({"messageStart": {"role": "assistant"}})
        if isinstance(event, TextDelta):
            out.append({"contentBlockDelta": {"delta": {"text": event.text}, "contentBlockIndex": self._index(event.block)}})
        elif isinstance(event, ToolUseStarted):
            start = {"toolUse": {"toolUseId": event.id, "name": event.name}}
            out.append({"contentBlockStart": {"start": start, "contentBlockIndex": self._index(event.block)}})
        elif isinstance(event, ToolInputDelta):
            delta = {"toolUse": {"input": event.partial_json}}
            out.append({"contentBlockDelta": {"delta": delta, "contentBlockIndex": self._index(event.block)}})
        elif isinstance(event, BlockStopped):
            out += self._close(self._indexes.get(event.block))
        elif isinstance(event, MessageStopped):
            out += self._message_stop(event.stop_reason)
        elif isinstance(event, UsageReported):
            self._usage = event.applied_to(self._usage)
        elif isinstance(event, StreamEnded):
            out += self._message_stop("end_turn")
            out.append({"metadata": {"usage": _usage_fields(self._usage, total=False), "metrics": {}, "trace": {}}})
            self._ended = True
        return out

    def _index(self, block: int) -> int:
        if block not in self._indexes:
            self._indexes[block] = len(self._indexes)
        self._open.add(self._indexes[block])
        return self._indexes[block]

    def _close(self, index: int | None) -> list[dict[str, Any]]:
        if index is None or index not in self._open:
            return []
        self._open.discard(index)
        return [{"contentBlockStop": {"contentBlockIndex": index}}]

    def _message_stop(self, reason: str) -> list[dict[str, Any]]:
        if self._stopped:
            return []
        out = [stop for index in sorted(self._open) for stop in self._close(index)]
        self._stopped = True
        return [*out, {"messageStop": {"stopReason": reason}}]
