"""Cross-family fallback: serve a request with another model family, unnoticed.

The client's body (its *source* family) is translated to the *target* family
through the neutral form (`adapters.neutral`), and the target's response — a
JSON body, or every event of a stream — back to the source family's shape, so
the client's own SDK parses it. Same-family calls are the identity.

What maps (where both sides have it): messages and multi-turn history, system
prompt, max tokens, temperature, top_p, top_k (Claude ↔ Nova), stop sequences,
base64 images, tools, tool choice, tool use and tool results (Claude
`tools`/`tool_use`/`tool_result` ↔ Nova `toolConfig`/`toolUse`/`toolResult`),
prompt-cache checkpoints (`cache_control` ↔ `cachePoint`), stop reasons
(end_turn, max_tokens, stop_sequence, tool_use, refusal ↔ content_filtered) and
usage (input, output, cache read, cache write).

What is dropped (the answer keeps its shape): extended thinking and earlier
turns' reasoning blocks, `anthropic_beta`, `metadata`, `service_tier`,
`context_management`, unknown top-level fields; for Llama also top_k and cache
checkpoints; for Claude, top_p when temperature is also set (Claude 4.5 refuses
both). A missing max tokens becomes Claude's required `max_tokens` 4096, or
Llama's own default 512 when Llama is the source. Which stop sequence matched
is lost when Nova or Llama answer a Claude client (`stop_sequence: null`).

What is refused (`TranslationError`, naming the family and field): a request
that needs what the target lacks — tools, tool blocks, images or stop
sequences to Llama; server tools, documents, URL images, structured output,
MCP and containers from Claude; video, audio, documents from Nova; Claude
legacy Text Completions; a Llama prompt that is not the Llama 3 chat template.

The target model's output limit is not known here: clamp the translated body
with `adapters.maxtokens.clamp_max_output_tokens` if the chain needs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters import family_of
from adapters.neutral import TranslationError
from adapters.translate_stream import StreamTranslator, translator_of

__all__ = [
    "TranslationError",
    "can_translate",
    "translate_request",
    "translate_response",
    "StreamTranslator",
    "translate_converse_request",
]


def can_translate(source_family: str, target_family: str) -> bool:
    """Whether a fallback step from one family to the other can work at all (config
    validation); a particular request may still be refused by `translate_request`."""
    if source_family == target_family:
        return True
    try:
        translator_of(source_family)
        translator_of(target_family)
    except TranslationError:
        return False
    return True


def translate_request(source_family: str, target_family: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The client's InvokeModel body, rewritten for the target family."""
    if source_family == target_family:
        return dict(body)
    neutral = translator_of(source_family).request_to_neutral(body)
    result: dict[str, Any] = translator_of(target_family).request_from_neutral(neutral)
    return result


def translate_response(
    source_family: str, target_family: str, body: Mapping[str, Any], requested_model_id: str
) -> dict[str, Any]:
    """The target's InvokeModel response body, in the client's (source) family shape."""
    if source_family == target_family:
        return dict(body)
    neutral = translator_of(target_family).response_to_neutral(body)
    result: dict[str, Any] = translator_of(source_family).response_from_neutral(neutral, requested_model_id)
    return result


# --- Converse --------------------------------------------------------------------------
# Converse is one API for every model: only the model-specific parts change.
#
# * `additionalModelRequestFields`: keys another family owns are dropped; top-k
#   moves between Claude's `top_k` and Nova's `inferenceConfig.topK`.
# * `additionalModelResponseFieldPaths` point into Claude's native response
#   (`/stop_sequence`); dropped for any other target.
# * `cachePoint` blocks (messages, system, tools) are dropped for targets without
#   prompt caching (only Claude and Nova have it).
# * `reasoningContent` blocks of earlier turns are dropped, except for a Claude
#   target when they carry Claude's signature or redacted content.
# Everything else, tools included, is left for Bedrock to validate.

#: `additionalModelRequestFields` keys per family (Bedrock model parameter pages, 2025).
_REQUEST_FIELDS = {
    "anthropic": frozenset({"anthropic_beta", "anthropic_version", "thinking", "reasoning_config", "top_k"}),
    "nova": frozenset({"inferenceConfig", "reasoningConfig"}),
}
_CACHING_FAMILIES = frozenset({"anthropic", "nova"})


def _additional_fields(fields: Mapping[str, Any], target: str) -> dict[str, Any]:
    out = {
        key: value for key, value in fields.items()
        if not any(key in owned for family, owned in _REQUEST_FIELDS.items() if family != target)
    }
    nova_config = fields.get("inferenceConfig")
    nova_top_k = nova_config.get("topK") if isinstance(nova_config, Mapping) else None
    if target == "anthropic" and nova_top_k is not None:
        out.setdefault("top_k", nova_top_k)
    if target == "nova" and fields.get("top_k") is not None:
        config = out.get("inferenceConfig") or {}
        if isinstance(config, Mapping):  # any other value is left for Bedrock to refuse
            out["inferenceConfig"] = {**config, "topK": config.get("topK", fields["top_k"])}
    return out


def _keep_block(block: object, target: str) -> bool:
    if not isinstance(block, Mapping):
        return True
    if "cachePoint" in block:
        return target in _CACHING_FAMILIES
    if "reasoningContent" in block:
        reasoning = block["reasoningContent"]
        if target != "anthropic" or not isinstance(reasoning, Mapping):
            return False
        text = reasoning.get("reasoningText")
        return "redactedContent" in reasoning or (isinstance(text, Mapping) and bool(text.get("signature")))
    return True


def _filtered(blocks: object, target: str) -> object:
    return [block for block in blocks if _keep_block(block, target)] if isinstance(blocks, list) else blocks


def translate_converse_request(body: Mapping[str, Any], target_model_id: str) -> dict[str, Any]:
    """A Converse / ConverseStream body for another model; rules above."""
    target = family_of(target_model_id)
    # Copies what changes, not the whole body: `copy.deepcopy` recurses twice per level
    # and raised RecursionError on nesting that `json.loads` had accepted.
    out = dict(body)
    fields = out.get("additionalModelRequestFields")
    if isinstance(fields, Mapping):
        kept = _additional_fields(fields, target)
        if kept:
            out["additionalModelRequestFields"] = kept
        else:
            del out["additionalModelRequestFields"]
    if target != "anthropic":
        out.pop("additionalModelResponseFieldPaths", None)
    messages = out.get("messages")
    if isinstance(messages, list):  # anything else is left for Bedrock to refuse
        out["messages"] = [
            {**message, "content": _filtered(message["content"], target)}
            if isinstance(message, dict) and "content" in message else message
            for message in messages
        ]
    if "system" in out:
        out["system"] = _filtered(out["system"], target)
    tool_config = out.get("toolConfig")
    if isinstance(tool_config, dict) and "tools" in tool_config:
        out["toolConfig"] = {**tool_config, "tools": _filtered(tool_config["tools"], target)}
    return out
