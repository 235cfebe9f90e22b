"""Helpers shared by the model-native bodies of the text families (Titan,
Llama, Mistral, Cohere, AI21, DeepSeek, OpenAI): request checks worded as
Bedrock words them, prompts from a text field or OpenAI-style `messages`, and
the OpenAI-shaped pieces several families answer with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from simulator.generate import Completion, Prompt, PromptBuilder, malformed

__all__ = [
    "require",
    "only",
    "setting",
    "text_prompt",
    "chat_prompt",
    "add_chat_messages",
    "stop_reason",
    "chat_id",
    "openai_usage",
    "grouped",
]

_PART_TEXT_KEYS = ("text", "content")


def require(body: Mapping[str, Any], *keys: str) -> None:
    for key in keys:
        if key not in body:
            raise malformed(f"required key [{key}] not found")


def only(body: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Bedrock's JSON schemas for the older families refuse unknown keys."""
    known = frozenset(allowed)
    for key in body:
        if key not in known:
            raise malformed(f"extraneous key [{key}] is not permitted")


def setting(body: Mapping[str, Any], key: str, default: Any) -> Any:
    """`body[key]`, or `default` when it is absent or null."""
    value = body.get(key)
    return default if value is None else value


def text_prompt(body: Mapping[str, Any], key: str, max_tokens: Any) -> Prompt:
    """A prompt that is one string (`prompt`, `inputText`)."""
    require(body, key)
    builder = PromptBuilder()
    builder.text(body[key])
    return builder.build(max_tokens)


def add_chat_messages(builder: PromptBuilder, messages: Any) -> None:
    """OpenAI-style messages: string content or a list of parts; tool calls by size."""
    if not isinstance(messages, list) or not messages:
        raise malformed("messages: expected a non-empty JSONArray")
    for message in messages:
        if not isinstance(message, Mapping):
            raise malformed("messages: expected type: JSONObject")
        builder.message(message.get("role"))
        content = message.get("content")
        if isinstance(content, str):
            builder.text(content)
        elif isinstance(content, list):
            for part in content:
                text = next((part[k] for k in _PART_TEXT_KEYS if isinstance(part, Mapping)
                             and isinstance(part.get(k), str)), None)
                if text is not None:
                    builder.text(text)
                elif isinstance(part, Mapping):
                    builder.media(part)
        elif content is not None:
            raise malformed("content: expected type: String or JSONArray")
        if message.get("tool_calls"):
            builder.structure(message["tool_calls"])


def chat_prompt(body: Mapping[str, Any], max_keys: tuple[str, ...], default_max: int) -> Prompt:
    """Tools first, then the messages: the same prefix order as the other families."""
    require(body, "messages")
    builder = PromptBuilder()
    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            builder.structure(tool)
    add_chat_messages(builder, body["messages"])
    value = next((body[k] for k in max_keys if body.get(k) is not None), default_max)
    return builder.build(value)


def stop_reason(completion: Completion, finished: str, truncated: str) -> str:
    """The family's spelling of "end_turn" / "max_tokens"."""
    return finished if completion.stop_reason == "end_turn" else truncated


def chat_id(request_id: str) -> str:
    return "chatcmpl-" + request_id.replace("-", "")


def openai_usage(completion: Completion) -> dict[str, int]:
    usage = completion.usage
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def grouped(deltas: tuple[str, ...], size: int) -> list[str]:
    """Words joined `size` at a time: families whose chunks carry many tokens."""
    return ["".join(deltas[i : i + size]) for i in range(0, len(deltas), size)]
