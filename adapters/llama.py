"""Meta Llama on InvokeModel (`meta.llama3-*`, `meta.llama4-*`).

Bodies are `{"generation", "prompt_token_count", "generation_token_count",
"stop_reason"}`. In a stream every chunk repeats the shape:
`prompt_token_count` is set in the first chunk only (null after), and
`generation_token_count` is cumulative — the last value is the total
(dd-trace-py `meta_invoke_stream.yaml`: 1, 2, …, 60; the last chunk also has
`stop_reason` and the invocation metrics).

Translation (see `adapters.translate`): the request is one `prompt` string in the
Llama 3 chat template, plus `max_gen_len`, `temperature` and `top_p`. There are
no tools, images or stop sequences in Llama's InvokeModel API, so a request that
needs them is refused; `top_k` and cache checkpoints are dropped. A prompt
without the template is a single user turn.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from adapters._fields import first_count, usage_or_none
from adapters.neutral import (
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
    ToolResult,
    ToolUse,
    TranslationError,
    UsageReported,
    optional_count,
    optional_number,
    str_at,
)
from adapters.usage import Usage

__all__ = [
    "MODEL_PREFIXES", "usage_from_body", "usage_from_chunk", "output_text",
    "request_to_neutral", "request_from_neutral", "response_to_neutral", "response_from_neutral",
    "StreamDecoder", "StreamEncoder", "chat_prompt",
]

MODEL_PREFIXES = ("meta.llama",)


def usage_from_body(body: Mapping[str, Any]) -> Usage | None:
    return usage_or_none(
        input_tokens=first_count(body, "prompt_token_count"),
        output_tokens=first_count(body, "generation_token_count"),
    )


def usage_from_chunk(chunk: Mapping[str, Any], usage: Usage | None) -> Usage | None:
    prompt = first_count(chunk, "prompt_token_count")
    generated = first_count(chunk, "generation_token_count")
    if prompt is None and generated is None:
        return usage
    # null prompt counts after the first chunk leave the first one in place.
    return (usage or Usage()).merged(input_tokens=prompt, output_tokens=generated)


def output_text(chunk: Mapping[str, Any]) -> str:
    generation = chunk.get("generation")
    return generation if isinstance(generation, str) else ""


# --- translation -----------------------------------------------------------------------

_FAMILY = "llama"
#: Llama's own default when `max_gen_len` is absent (AWS model-parameters-meta page);
#: carried over so the fallback stops where the client's model would have.
DEFAULT_MAX_GEN_LEN = 512
_BEGIN = "<|begin_of_text|>"
_EOT = "<|eot_id|>"
_HEADER = re.compile(r"<\|start_header_id\|>([a-z]+)<\|end_header_id\|>\n\n")
_STOP_TO_NEUTRAL = {"stop": "end_turn", "length": "max_tokens"}
_LENGTH_STOPS = frozenset({"max_tokens", "model_context_window_exceeded"})


def _header(role: str) -> str:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n"


def chat_prompt(system: str | None, turns: list[tuple[str, str]]) -> str:
    """The Llama 3 chat template; a last assistant turn is a prefill the model continues."""
    prompt = _BEGIN
    if system:
        prompt += _header("system") + system + _EOT
    for i, (role, text) in enumerate(turns):
        prompt += _header(role) + text
        if not (role == "assistant" and i == len(turns) - 1):
            prompt += _EOT
    if not turns or turns[-1][0] != "assistant":
        prompt += _header("assistant")
    return prompt


def _parse_prompt(prompt: str) -> tuple[list[Text], list[Message]]:
    if "<|start_header_id|>" not in prompt:
        return [], [Message("user", (Text(prompt),))]
    text = prompt.removeprefix(_BEGIN)
    system: list[Text] = []
    messages: list[Message] = []
    pos = 0
    while pos < len(text):
        match = _HEADER.match(text, pos)
        if match is None:
            raise TranslationError(_FAMILY, "prompt", f"not a Llama 3 chat template at offset {pos}")
        role = match.group(1)
        end = text.find(_EOT, match.end())
        content = text[match.end():] if end < 0 else text[match.end():end]
        pos = len(text) if end < 0 else end + len(_EOT)
        if role == "system":
            system.append(Text(content))
        elif role in ("user", "assistant"):
            if not (end < 0 and role == "assistant" and content == ""):  # the generation prompt
                messages.append(Message("user" if role == "user" else "assistant", (Text(content),)))
        else:
            raise TranslationError(_FAMILY, "prompt", f"the {role!r} role (tool calling) does not translate")
    return system, messages


def request_to_neutral(body: Mapping[str, Any]) -> NeutralRequest:
    if body.get("images"):
        raise TranslationError(_FAMILY, "images", "Llama vision input does not translate")
    system, messages = _parse_prompt(str_at(body.get("prompt"), _FAMILY, "prompt"))
    max_gen_len = optional_count(body.get("max_gen_len"), _FAMILY, "max_gen_len")
    return NeutralRequest(
        messages=tuple(messages),
        system=tuple(system),
        max_tokens=DEFAULT_MAX_GEN_LEN if max_gen_len is None else max_gen_len,
        temperature=optional_number(body.get("temperature"), _FAMILY, "temperature"),
        top_p=optional_number(body.get("top_p"), _FAMILY, "top_p"),
    )


def request_from_neutral(request: NeutralRequest) -> dict[str, Any]:
    if request.tools:
        raise TranslationError(_FAMILY, "tools", "Llama's InvokeModel API has no tool use")
    if request.stop_sequences:
        raise TranslationError(_FAMILY, "stop_sequences", "Llama's InvokeModel API has no stop sequences")
    turns: list[tuple[str, str]] = []
    for i, message in enumerate(request.messages):
        texts = []
        for j, block in enumerate(message.content):
            if isinstance(block, ToolUse | ToolResult):
                raise TranslationError(_FAMILY, f"messages[{i}].content[{j}]", "Llama has no tool use")
            if isinstance(block, Image):
                raise TranslationError(_FAMILY, f"messages[{i}].content[{j}]", "images do not translate to Llama")
            texts.append(block.text)
        turns.append((message.role, "\n".join(texts)))
    system = "\n".join(block.text for block in request.system) or None
    body: dict[str, Any] = {"prompt": chat_prompt(system, turns)}
    for key, value in (
        ("max_gen_len", request.max_tokens), ("temperature", request.temperature), ("top_p", request.top_p),
    ):
        if value is not None:
            body[key] = value
    return body


def response_to_neutral(body: Mapping[str, Any]) -> NeutralResponse:
    generation = output_text(body)
    return NeutralResponse(
        content=(Text(generation),) if generation else (),
        stop_reason=_STOP_TO_NEUTRAL.get(str(body.get("stop_reason")), "end_turn"),
        usage=usage_from_body(body) or Usage(),
        bedrock_fields={key: value for key, value in body.items() if key.startswith("amazon-bedrock-")},
    )


def _stop_reason(reason: str) -> str:
    return "length" if reason in _LENGTH_STOPS else "stop"


def _prompt_tokens(usage: Usage) -> int:
    # Llama has no prompt cache: its prompt count is every input token.
    return usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens


def response_from_neutral(response: NeutralResponse, model_id: str) -> dict[str, Any]:
    return {
        "generation": "".join(block.text for block in response.content if isinstance(block, Text)),
        "prompt_token_count": _prompt_tokens(response.usage),
        "generation_token_count": response.usage.output_tokens,
        "stop_reason": _stop_reason(response.stop_reason),
        **response.bedrock_fields,
    }


class StreamDecoder:
    """Llama chunks → neutral events; all text is block 0."""

    def __init__(self) -> None:
        self._started = self._text = False

    def decode(self, chunk: Mapping[str, Any]) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        prompt = first_count(chunk, "prompt_token_count")
        if not self._started:
            self._started = True
            events.append(MessageStarted(None if prompt is None else Usage(input_tokens=prompt)))
        elif prompt is not None:
            events.append(UsageReported(input_tokens=prompt))
        generation = output_text(chunk)
        if generation:
            self._text = True
            events.append(TextDelta(0, generation))
        generated = first_count(chunk, "generation_token_count")
        if generated is not None:
            events.append(UsageReported(output_tokens=generated))
        reason = chunk.get("stop_reason")
        if isinstance(reason, str):
            if self._text:
                events.append(BlockStopped(0))
            events += [MessageStopped(_STOP_TO_NEUTRAL.get(reason, "end_turn")), StreamEnded()]
        return events


class StreamEncoder:
    """Neutral events → Llama chunks. Each text delta is one chunk with a running
    `generation_token_count` (the chunks emitted so far, or the upstream's count if
    higher); the closing chunk has the real totals, the stop reason and — if the
    upstream reported input only at the end (Nova) — `prompt_token_count`."""

    def __init__(self, model_id: str):
        self._usage = Usage()
        self._input_known = False
        self._prompt_sent = False
        self._chunks = 0
        self._stop = "end_turn"
        self._ended = False

    def encode(self, event: StreamEvent) -> list[dict[str, Any]]:
        if self._ended:
            return []
        if isinstance(event, MessageStarted) and event.usage is not None:
            self._usage = event.usage
            self._input_known = True
        elif isinstance(event, UsageReported):
            self._usage = event.applied_to(self._usage)
            self._input_known = self._input_known or event.input_tokens is not None
        elif isinstance(event, TextDelta) and event.text:
            self._chunks += 1
            return [self._chunk(event.text, max(self._chunks, self._usage.output_tokens), None)]
        elif isinstance(event, MessageStopped):
            self._stop = event.stop_reason
        elif isinstance(event, StreamEnded):
            self._ended = True
            return [self._chunk("", self._usage.output_tokens or self._chunks, _stop_reason(self._stop))]
        return []

    def _chunk(self, text: str, generated: int, stop_reason: str | None) -> dict[str, Any]:
        prompt = None
        if not self._prompt_sent and self._input_known:
            prompt = _prompt_tokens(self._usage)
            self._prompt_sent = True
        return {
            "generation": text,
            "prompt_token_count": prompt,
            "generation_token_count": generated,
            "stop_reason": stop_reason,
        }
