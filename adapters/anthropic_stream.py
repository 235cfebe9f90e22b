"""Anthropic Messages event streams to and from the neutral stream events.

The decoder reads the chunks Bedrock streams for Claude (message_start,
content_block_*, message_delta, message_stop); the encoder writes them for a
Claude client whose request another family served (see `adapters.translate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters._fields import child, first_count
from adapters.anthropic_fields import (
    STOP_TO_NEUTRAL,
    message_id,
    model_name,
    stop_reason,
    usage_fields,
    usage_from_fields,
)
from adapters.neutral import (
    BlockStopped,
    MessageStarted,
    MessageStopped,
    StreamEnded,
    StreamEvent,
    TextDelta,
    ToolInputDelta,
    ToolUseStarted,
    UsageReported,
)
from adapters.usage import Usage

__all__ = ["StreamDecoder", "StreamEncoder"]


class StreamDecoder:
    """Claude stream chunks → neutral events (thinking and server-tool blocks are skipped)."""

    def __init__(self) -> None:
        self._skipped: set[int] = set()

    def decode(self, chunk: Mapping[str, Any]) -> list[StreamEvent]:
        kind = chunk.get("type")
        index = chunk.get("index")
        if kind == "message_start":
            return [MessageStarted(usage_from_fields(child(child(chunk, "message"), "usage")))]
        if kind == "content_block_start" and isinstance(index, int):
            block = child(chunk, "content_block")
            if block.get("type") == "text":
                text = block.get("text")
                return [TextDelta(index, text)] if isinstance(text, str) and text else []
            if block.get("type") == "tool_use":
                return [ToolUseStarted(index, str(block.get("id")), str(block.get("name")))]
            self._skipped.add(index)
            return []
        if kind == "content_block_delta" and isinstance(index, int) and index not in self._skipped:
            delta = child(chunk, "delta")
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                return [TextDelta(index, delta["text"])]
            if delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
                return [ToolInputDelta(index, delta["partial_json"])]
            return []
        if kind == "content_block_stop" and isinstance(index, int) and index not in self._skipped:
            return [BlockStopped(index)]
        if kind == "message_delta":
            events: list[StreamEvent] = []
            reason = child(chunk, "delta").get("stop_reason")
            if isinstance(reason, str):
                sequence = child(chunk, "delta").get("stop_sequence")
                events.append(MessageStopped(
                    STOP_TO_NEUTRAL.get(reason, "end_turn"), sequence if isinstance(sequence, str) else None
                ))
            usage = child(chunk, "usage")
            events.append(UsageReported(
                input_tokens=first_count(usage, "input_tokens"),
                output_tokens=first_count(usage, "output_tokens"),
                cache_read_tokens=first_count(usage, "cache_read_input_tokens"),
                cache_write_tokens=first_count(usage, "cache_creation_input_tokens"),
            ))
            return events
        if kind == "message_stop":
            return [StreamEnded()]
        return []  # ping, skipped blocks


class StreamEncoder:
    """Neutral events → a Claude stream the Anthropic SDK accumulates.

    `message_start` carries the usage the upstream knew at the start (Llama: its
    prompt count; Nova: nothing yet, so zeros). The closing `message_delta` carries
    the final cumulative usage — input and cache counts included — which the SDK's
    `accumulate_event` writes over the `message_start` values.
    Adjacent text blocks of the upstream become one text block, as Claude sends them.
    """

    def __init__(self, model_id: str):
        self._model = model_name(model_id)
        self._usage = Usage()
        self._started = False
        self._ended = False
        self._next_index = 0
        #: (upstream block, client index, "text" | "tool_use") of the open block.
        self._open: tuple[int, int, str] | None = None
        self._text_stop_pending = False
        self._stop: MessageStopped | None = None

    def encode(self, event: StreamEvent) -> list[dict[str, Any]]:
        if self._ended:
            return []
        out = [] if self._started or isinstance(event, UsageReported) else [self._message_start(event)]
        if isinstance(event, TextDelta):
            out += self._text(event)
        elif isinstance(event, ToolUseStarted):
            out += self._close()
            out.append(self._open_block(event.block, "tool_use", {
                "type": "tool_use", "id": event.id, "name": event.name, "input": {},
            }))
        elif isinstance(event, ToolInputDelta):
            if self._open is not None and self._open[0] == event.block and self._open[2] == "tool_use":
                out.append({"type": "content_block_delta", "index": self._open[1],
                            "delta": {"type": "input_json_delta", "partial_json": event.partial_json}})
        elif isinstance(event, BlockStopped):
            if self._open is not None and self._open[0] == event.block:
                if self._open[2] == "text":
                    self._text_stop_pending = True  # the next text block may continue this one
                else:
                    out += self._close()
        elif isinstance(event, MessageStopped):
            out += self._close()
            self._stop = event
        elif isinstance(event, UsageReported):
            self._usage = event.applied_to(self._usage)
        elif isinstance(event, StreamEnded):
            out += self._close()
            stop = self._stop or MessageStopped("end_turn")
            out.append({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(stop.stop_reason), "stop_sequence": stop.stop_sequence},
                "usage": usage_fields(self._usage),
            })
            out.append({"type": "message_stop"})
            self._ended = True
        return out

    def _message_start(self, event: StreamEvent) -> dict[str, Any]:
        self._started = True
        if isinstance(event, MessageStarted) and event.usage is not None:
            self._usage = event.usage
        return {"type": "message_start", "message": {
            "id": message_id(), "type": "message", "role": "assistant", "model": self._model,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage_fields(self._usage),
        }}

    def _text(self, event: TextDelta) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._open is not None and self._open[2] == "text" and (
            self._open[0] == event.block or self._text_stop_pending
        ):
            self._open = (event.block, self._open[1], "text")
            self._text_stop_pending = False
        else:
            out += self._close()
            out.append(self._open_block(event.block, "text", {"type": "text", "text": ""}))
        if event.text:
            out.append({"type": "content_block_delta", "index": self._open[1] if self._open else 0,
                        "delta": {"type": "text_delta", "text": event.text}})
        return out

    def _open_block(self, block: int, kind: str, content_block: dict[str, Any]) -> dict[str, Any]:
        self._open = (block, self._next_index, kind)
        self._next_index += 1
        return {"type": "content_block_start", "index": self._open[1], "content_block": content_block}

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        index = self._open[1]
        self._open = None
        self._text_stop_pending = False
        return [{"type": "content_block_stop", "index": index}]
