"""Hypothesis grammars of the bodies the translating families read (Claude
Messages, Nova messages-v1, Llama prompts), where any field may hold a value of
the wrong type: structure the seed mutations of `strategies` reach only rarely
(an image whose `media_type` is a list, a `toolSpec` among message blocks)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.adapters.strategies import json_objects, json_values, sometimes

__all__ = ["REQUESTS", "RESPONSES"]


def _field(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The right type, or about one time in twelve any JSON value: rare enough
    that a body often gets past its first wrong field to the next."""
    return sometimes(strategy, json_values, 12)


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {key: _field(value) for key, value in required.items()},
        optional={key: _field(value) for key, value in (optional or {}).items()},
    )


texts = st.text(max_size=12)
ids = st.text(alphabet="abcdefgh_01", min_size=1, max_size=6)
counts = st.integers(min_value=0, max_value=10**6)
numbers = st.floats(min_value=0, max_value=1)
schemas = st.just({"type": "object", "properties": {"city": {"type": "string"}}})
stop_sequences = st.lists(texts, max_size=2)

# --- Claude Messages --------------------------------------------------------------------
_a_text = _obj({"type": st.just("text"), "text": texts}, {"cache_control": st.just({"type": "ephemeral"})})
_a_image = _obj({"type": st.just("image"), "source": _obj({
    "type": st.just("base64"),
    "media_type": st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp", "image/tiff"]),
    "data": texts,
})})
_a_tool_use = _obj({"type": st.just("tool_use"), "id": ids, "name": ids, "input": json_objects})
_a_tool_result = _obj(
    {"type": st.just("tool_result"), "tool_use_id": ids},
    {"content": st.one_of(texts, st.lists(st.one_of(_a_text, _a_image), max_size=2)), "is_error": st.booleans()},
)
_a_other = _obj({"type": st.sampled_from(["thinking", "redacted_thinking", "document", "server_tool_use"])})
_a_block = st.one_of(_a_text, _a_image, _a_tool_use, _a_tool_result, _a_other, texts)
_a_message = _obj({"role": st.sampled_from(["user", "assistant"]),
                   "content": st.one_of(texts, st.lists(_a_block, max_size=4))})
_a_tool = _obj({"name": ids, "input_schema": schemas},
               {"description": texts, "type": st.sampled_from(["custom", "web_search_20250305"]),
                "cache_control": st.just({"type": "ephemeral"})})
_a_choice = st.one_of(_obj({"type": st.sampled_from(["auto", "any", "none", "other"])}),
                      _obj({"type": st.just("tool"), "name": ids}))
ANTHROPIC = _obj({"messages": st.lists(_a_message, max_size=4)}, {
    "anthropic_version": st.just("bedrock-2023-05-31"),
    "system": st.one_of(texts, st.lists(st.one_of(_a_text, _a_image), max_size=2)),
    "max_tokens": counts, "temperature": numbers, "top_p": numbers, "top_k": counts,
    "stop_sequences": stop_sequences, "tools": st.lists(_a_tool, max_size=2), "tool_choice": _a_choice,
})
_A_RESPONSE = _obj({"content": st.lists(st.one_of(_a_text, _a_tool_use, _a_other), max_size=3)}, {
    "stop_reason": st.sampled_from(["end_turn", "max_tokens", "tool_use", "refusal", "pause_turn"]),
    "stop_sequence": texts,
    "usage": _obj({"input_tokens": counts, "output_tokens": counts},
                  {"cache_read_input_tokens": counts, "cache_creation_input_tokens": counts}),
})

# --- Nova messages-v1 -------------------------------------------------------------------
_n_text = _obj({"text": texts})
_n_image = _obj({"image": _obj({"format": st.sampled_from(["png", "jpeg", "gif", "webp", "tiff"]),
                                "source": _obj({"bytes": texts})})})
_n_tool_use = _obj({"toolUse": _obj({"toolUseId": ids, "name": ids, "input": json_objects})})
_n_tool_result = _obj({"toolResult": _obj(
    {"toolUseId": ids, "content": st.lists(st.one_of(_n_text, _obj({"json": json_values}), _n_image), max_size=2)},
    {"status": st.sampled_from(["success", "error"])},
)})
_n_cache = st.just({"cachePoint": {"type": "default"}})
_n_tool_spec = _obj({"toolSpec": _obj({"name": ids, "inputSchema": _obj({"json": schemas})}, {"description": texts})})
_n_other = st.builds(lambda key, value: {key: value},
                     st.sampled_from(["reasoningContent", "video", "document"]), json_objects)
_n_block = st.one_of(_n_text, _n_image, _n_tool_use, _n_tool_result, _n_cache, _n_other, _n_tool_spec)
_n_message = _obj({"role": st.sampled_from(["user", "assistant"]), "content": st.lists(_n_block, max_size=4)})
NOVA = _obj({"messages": st.lists(_n_message, max_size=4)}, {
    "schemaVersion": st.just("messages-v1"),
    "system": st.lists(st.one_of(_n_text, _n_cache), max_size=2),
    "inferenceConfig": _obj({}, {"maxTokens": counts, "max_new_tokens": counts, "temperature": numbers,
                                 "topP": numbers, "topK": counts, "stopSequences": stop_sequences}),
    "toolConfig": _obj({}, {
        "tools": st.lists(st.one_of(_n_tool_spec, _n_cache), max_size=2),
        "toolChoice": st.one_of(st.just({"auto": {}}), st.just({"any": {}}), _obj({"tool": _obj({"name": ids})})),
    }),
})
_N_RESPONSE = _obj({"output": _obj({"message": _obj({"role": st.just("assistant"),
                                                     "content": st.lists(_n_block, max_size=3)})})}, {
    "stopReason": st.sampled_from(["end_turn", "max_tokens", "tool_use", "guardrail_intervened"]),
    "usage": _obj({"inputTokens": counts, "outputTokens": counts, "totalTokens": counts},
                  {"cacheReadInputTokenCount": counts, "cacheWriteInputTokenCount": counts}),
})

# --- Llama prompts ----------------------------------------------------------------------
_turns = st.builds(
    lambda role, text, ended: f"<|start_header_id|>{role}<|end_header_id|>\n\n{text}" + ("<|eot_id|>" if ended else ""),
    st.sampled_from(["system", "user", "assistant", "ipython", "tool"]), texts, st.booleans(),
)
_prompts = st.one_of(texts, st.builds(lambda begin, turns: ("<|begin_of_text|>" if begin else "") + "".join(turns),
                                      st.booleans(), st.lists(_turns, max_size=4)))
LLAMA = _obj({"prompt": _prompts},
             {"max_gen_len": counts, "temperature": numbers, "top_p": numbers, "images": st.lists(texts, max_size=1)})
_L_RESPONSE = _obj({"generation": texts}, {
    "prompt_token_count": counts, "generation_token_count": counts, "stop_reason": st.sampled_from(["stop", "length"]),
})

REQUESTS = {"anthropic": ANTHROPIC, "nova": NOVA, "llama": LLAMA}
RESPONSES = {"anthropic": _A_RESPONSE, "nova": _N_RESPONSE, "llama": _L_RESPONSE}
