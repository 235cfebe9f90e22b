"""Request and response translation between Claude, Nova and Llama bodies."""

from __future__ import annotations

import copy
import dataclasses
import json
from itertools import permutations
from typing import Any

import pytest
from anthropic.types import Message as AnthropicMessage

from adapters import FAMILIES, anthropic, llama
from adapters.translate import (
    TranslationError,
    can_translate,
    translate_converse_request,
    translate_request,
    translate_response,
)
from tests.adapters.cassettes import interaction

FAMILY_NAMES = ("anthropic", "nova", "llama")
PAIRS = list(permutations(FAMILY_NAMES, 2))
CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
MODEL_IDS = {"anthropic": CLAUDE, "nova": "amazon.nova-lite-v1:0", "llama": "meta.llama3-70b-instruct-v1:0"}

# The same multi-turn chat in each family's request shape.
CHAT = {
    "anthropic": {
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 200, "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello! How can I help?"}]},
            {"role": "user", "content": [{"type": "text", "text": "Tell me a joke"}]},
        ],
        "temperature": 0.5,
    },
    "nova": {
        "schemaVersion": "messages-v1", "system": [{"text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [{"text": "Hi"}]},
            {"role": "assistant", "content": [{"text": "Hello! How can I help?"}]},
            {"role": "user", "content": [{"text": "Tell me a joke"}]},
        ],
        "inferenceConfig": {"maxTokens": 200, "temperature": 0.5},
    },
    "llama": {
        "prompt": llama.chat_prompt("Be brief.", [
            ("user", "Hi"), ("assistant", "Hello! How can I help?"), ("user", "Tell me a joke"),
        ]),
        "max_gen_len": 200, "temperature": 0.5,
    },
}

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
# Tools, tool use and results, stop sequences, top_k and cache checkpoints: Claude ↔ Nova.
TOOLS = {
    "anthropic": {
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 300,
        "system": [{"type": "text", "text": "You report the weather.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": [{"type": "text", "text": "18C, sunny"}]},
                {"type": "tool_result", "tool_use_id": "toolu_01B", "content": [{"type": "text", "text": "no"}],
                 "is_error": True},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            ]},
        ],
        "temperature": 0.2, "top_k": 40, "stop_sequences": ["\n\nHuman:"],
        "tools": [{"name": "get_weather", "description": "Current weather", "input_schema": WEATHER_SCHEMA,
                   "cache_control": {"type": "ephemeral"}}],
        "tool_choice": {"type": "tool", "name": "get_weather"},
    },
    "nova": {
        "schemaVersion": "messages-v1",
        "system": [{"text": "You report the weather."}, {"cachePoint": {"type": "default"}}],
        "messages": [
            {"role": "user", "content": [{"text": "Weather in Paris?"}]},
            {"role": "assistant", "content": [
                {"text": "Let me check."},
                {"toolUse": {"toolUseId": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}},
            ]},
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": "toolu_01A", "content": [{"text": "18C, sunny"}]}},
                {"toolResult": {"toolUseId": "toolu_01B", "content": [{"text": "no"}], "status": "error"}},
                {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}},
            ]},
        ],
        "inferenceConfig": {"maxTokens": 300, "temperature": 0.2, "topK": 40,
                            "stopSequences": ["\n\nHuman:"]},
        "toolConfig": {
            "tools": [{"toolSpec": {"name": "get_weather", "description": "Current weather",
                                    "inputSchema": {"json": WEATHER_SCHEMA}}},
                      {"cachePoint": {"type": "default"}}],
            "toolChoice": {"tool": {"name": "get_weather"}},
        },
    },
}


def neutral(family: str, body: dict[str, Any]) -> Any:
    return FAMILIES[family].request_to_neutral(body)


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_chat_translates_to_the_same_conversation(source: str, target: str) -> None:
    translated = translate_request(source, target, CHAT[source])
    assert translated == CHAT[target]
    assert translate_request(target, source, translated) == neutral_equal_body(source, CHAT[source])


def neutral_equal_body(family: str, body: dict[str, Any]) -> dict[str, Any]:
    """`body` as the family's translator writes it (Claude's content becomes block lists)."""
    return FAMILIES[family].request_from_neutral(neutral(family, body))  # type: ignore[no-any-return]


@pytest.mark.parametrize(("source", "target"), [("anthropic", "nova"), ("nova", "anthropic")])
def test_tools_stop_sequences_and_cache_points_translate(source: str, target: str) -> None:
    translated = translate_request(source, target, TOOLS[source])
    assert neutral(target, translated) == documented_loss(neutral(source, TOOLS[source]), target)
    if target == "nova":
        assert translated == TOOLS["nova"]
    back = translate_request(target, source, translated)
    assert neutral(source, back) == neutral(source, TOOLS[source])


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_top_p_alone_translates(source: str, target: str) -> None:
    body = translate_request("anthropic", source, {**CHAT["anthropic"], "temperature": None, "top_p": 0.8})
    assert neutral(target, translate_request(source, target, body)).top_p == 0.8


def test_claude_gets_temperature_or_top_p_never_both() -> None:
    config = {"temperature": 0.7, "topP": 0.9}
    body = {"messages": CHAT["nova"]["messages"], "inferenceConfig": config}
    assert ("temperature", "top_p") & translate_request("nova", "anthropic", body).keys() == {"temperature"}
    body["inferenceConfig"] = {"topP": 0.9}
    assert translate_request("nova", "anthropic", body)["top_p"] == 0.9


@pytest.mark.parametrize(
    ("name", "target"),
    [(name, target) for name in ("openllmetry/test_prompt_cache.yaml", "dd-trace-py/anthropic_message_invoke_stream.yaml")
     for target in ("nova",)]
    + [(name, target) for name in ("openllmetry/test_nova_completion.yaml", "openllmetry/test_nova_invoke_stream.yaml")
       for target in ("anthropic", "llama")]
    + [("openllmetry/test_meta_llama3_completion.yaml", target) for target in ("anthropic", "nova")]
    + [("dd-trace-py/meta_invoke_stream.yaml", "anthropic")],
)
def test_recorded_requests_round_trip(name: str, target: str) -> None:
    item = interaction(name)
    source = FAMILIES_BY_MODEL[item.model_id]
    body = json.loads(item.request_body)
    translated = translate_request(source, target, body)
    assert neutral(target, translated).messages == neutral(source, body).messages
    back = translate_request(target, source, translated)
    assert neutral(source, back) == documented_loss(documented_loss(neutral(source, body), target), source)


def documented_loss(request: Any, via: str) -> Any:
    """What a trip through `via` keeps: Llama has no top_k; Claude takes temperature
    or top_p, not both; an unset max tokens comes back as the default `via` had to
    write (Claude requires one)."""
    defaults = {"anthropic": anthropic.DEFAULT_MAX_TOKENS, "llama": llama.DEFAULT_MAX_GEN_LEN}
    return dataclasses.replace(
        request,
        top_k=None if via == "llama" else request.top_k,
        top_p=None if via == "anthropic" and request.temperature is not None else request.top_p,
        max_tokens=request.max_tokens if request.max_tokens is not None else defaults.get(via),
    )


FAMILIES_BY_MODEL = {
    "anthropic.claude-3-5-haiku-20241022-v1:0": "anthropic",
    "anthropic.claude-3-sonnet-20240229-v1:0": "anthropic",
    "amazon.nova-lite-v1:0": "nova",
    "meta.llama3-70b-instruct-v1:0": "llama",
    "meta.llama2-13b-chat-v1": "llama",
}


def test_recorded_claude_request_to_nova() -> None:
    body = json.loads(interaction("openllmetry/test_prompt_cache.yaml").request_body)
    assert translate_request("anthropic", "nova", body) == {
        "schemaVersion": "messages-v1",
        "system": [{"text": "very very long system prompt"}],
        "messages": [{"role": "user", "content": [{"text": "How do I write js?"}, {"cachePoint": {"type": "default"}}]}],
        "inferenceConfig": {"maxTokens": 50, "temperature": 0.1, "topP": 0.1, "topK": 250, "stopSequences": ["stop"]},
    }


def test_llama_target_drops_top_k_and_cache_points_and_merges_blocks() -> None:
    body = {
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 64, "top_k": 5, "thinking": {"type": "enabled"},
        "anthropic_beta": ["x"], "metadata": {"user_id": "u"},
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "b"},
        ]}],
    }
    assert translate_request("anthropic", "llama", body) == {
        "prompt": llama.chat_prompt(None, [("user", "a\nb")]), "max_gen_len": 64,
    }


def test_missing_max_tokens_gets_a_value_claude_accepts() -> None:
    body = {"messages": [{"role": "user", "content": [{"text": "Hi"}]}]}
    assert translate_request("nova", "anthropic", body)["max_tokens"] == anthropic.DEFAULT_MAX_TOKENS
    assert translate_request("llama", "anthropic", {"prompt": "Hi"})["max_tokens"] == llama.DEFAULT_MAX_GEN_LEN


def test_nova_gets_alternating_turns() -> None:
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 9, "messages": [
        {"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    assert translate_request("anthropic", "nova", body)["messages"] == [
        {"role": "user", "content": [{"text": "a"}, {"text": "b"}]}]


def test_json_tool_results_become_text_for_claude() -> None:
    body = {"messages": [{"role": "user", "content": [
        {"toolResult": {"toolUseId": "t1", "content": [{"json": {"temp": 18}}]}}]}]}
    assert translate_request("nova", "anthropic", body)["messages"][0]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": '{"temp":18}'}]}]


def _claude(**fields: Any) -> dict[str, Any]:
    return {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10,
            "messages": [{"role": "user", "content": "Hi"}], **fields}


@pytest.mark.parametrize(
    ("source", "target", "body", "family", "field"),
    [
        ("anthropic", "llama", TOOLS["anthropic"], "llama", "tools"),
        ("nova", "llama", TOOLS["nova"], "llama", "tools"),
        ("anthropic", "llama", _claude(stop_sequences=["END"]), "llama", "stop_sequences"),
        ("nova", "llama", {"messages": CHAT["nova"]["messages"], "inferenceConfig": {"stopSequences": ["x"]}},
         "llama", "stop_sequences"),
        ("anthropic", "llama", {**TOOLS["anthropic"], "tools": [], "stop_sequences": []}, "llama",
         "messages[1].content[1]"),
        ("anthropic", "llama", _claude(messages=TOOLS["anthropic"]["messages"][2:]), "llama", "messages[0].content[0]"),
        ("anthropic", "nova", _claude(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
         "anthropic", "tools[0].type"),
        ("anthropic", "nova", _claude(messages=[{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}]}]),
         "anthropic", "messages[0].content[0].type"),
        ("anthropic", "nova", _claude(messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]),
         "anthropic", "messages[0].content[0].source"),
        ("anthropic", "nova", _claude(output_format={"type": "json_schema"}), "anthropic", "output_format"),
        ("anthropic", "nova", {"prompt": "\n\nHuman: Hi\n\nAssistant:", "max_tokens_to_sample": 9},
         "anthropic", "prompt"),
        ("anthropic", "nova", _claude(messages="Hi"), "anthropic", "messages"),
        ("anthropic", "nova", _claude(messages=[{"role": "system", "content": "x"}]), "anthropic", "messages[0].role"),
        ("anthropic", "nova", _claude(temperature="hot"), "anthropic", "temperature"),
        ("anthropic", "nova", {**TOOLS["anthropic"], "tool_choice": {"type": "none"}}, "nova", "tool_choice"),
        ("nova", "anthropic", {"messages": [{"role": "user", "content": [
            {"video": {"format": "mp4", "source": {"s3Location": {"uri": "s3://b/k"}}}}]}]},
         "nova", "messages[0].content[0].video"),
        ("nova", "anthropic", {"messages": [{"role": "user", "content": [
            {"image": {"format": "png", "source": {"s3Location": {"uri": "s3://b/k"}}}}]}]},
         "nova", "messages[0].content[0].image.source"),
        ("llama", "anthropic", {"prompt": "hi", "images": ["aGk="]}, "llama", "images"),
        ("anthropic", "titan", CHAT["anthropic"], "titan", "family"),
        ("generic", "nova", {}, "generic", "family"),
    ],
)
def test_refusals_name_the_family_and_field(
    source: str, target: str, body: dict[str, Any], family: str, field: str
) -> None:
    with pytest.raises(TranslationError) as caught:
        translate_request(source, target, body)
    assert (caught.value.family, caught.value.field) == (family, field)
    assert field in str(caught.value)


def test_tool_choice_none_without_tool_history_leaves_tools_out() -> None:
    body = _claude(tools=TOOLS["anthropic"]["tools"], tool_choice={"type": "none"})
    assert "toolConfig" not in translate_request("anthropic", "nova", body)


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [(a, b, True) for a, b in PAIRS]
    + [(f, f, True) for f in ("anthropic", "titan", "generic")]
    + [("anthropic", "titan", False), ("generic", "nova", False), ("nova", "unknown", False)],
)
def test_can_translate(source: str, target: str, expected: bool) -> None:
    assert can_translate(source, target) is expected


@pytest.mark.parametrize("family", ["anthropic", "nova", "llama", "titan", "generic"])
def test_same_family_is_the_identity(family: str) -> None:
    body = {"anything": [1, {"goes": True}]}
    assert translate_request(family, family, body) == body
    assert translate_response(family, family, body, "m") == body


# --- responses -------------------------------------------------------------------------

CLAUDE_TOOL_RESPONSE = {
    "id": "msg_bdrk_01X", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
    "content": [
        {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 20, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 30},
}
NOVA_TOOL_RESPONSE = {
    "output": {"message": {"role": "assistant", "content": [
        {"text": "Checking."},
        {"toolUse": {"toolUseId": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}},
    ]}},
    "stopReason": "tool_use",
    "usage": {"inputTokens": 20, "outputTokens": 30, "totalTokens": 155,
              "cacheReadInputTokenCount": 100, "cacheWriteInputTokenCount": 5},
}


def test_claude_tool_use_response_to_nova() -> None:
    assert translate_response("nova", "anthropic", CLAUDE_TOOL_RESPONSE, "amazon.nova-pro-v1:0") == NOVA_TOOL_RESPONSE


def test_nova_tool_use_response_to_claude_parses_with_the_sdk() -> None:
    body = translate_response("anthropic", "nova", NOVA_TOOL_RESPONSE, CLAUDE)
    message = AnthropicMessage.model_validate(body)
    assert message.model == "claude-3-5-haiku-20241022"
    assert message.id.startswith("msg_bdrk_01") and len(message.id) == 33
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.content[1].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (20, 30)
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (100, 5)


@pytest.mark.parametrize(
    ("name", "source", "check"),
    [
        ("openllmetry/test_prompt_cache.yaml#2", "nova",
         {"stopReason": "max_tokens",
          "usage": {"inputTokens": 4, "outputTokens": 50, "totalTokens": 18185,
                    "cacheReadInputTokenCount": 18131, "cacheWriteInputTokenCount": 0}}),
        ("openllmetry/test_prompt_cache.yaml#1", "llama",
         {"prompt_token_count": 18135, "generation_token_count": 50, "stop_reason": "length"}),
        ("openllmetry/test_nova_cross_region_invoke.yaml", "anthropic",
         {"stop_reason": "end_turn", "stop_sequence": None,
          "usage": {"input_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                    "output_tokens": 53}}),
        ("openllmetry/test_nova_cross_region_invoke.yaml", "llama",
         {"prompt_token_count": 7, "generation_token_count": 53, "stop_reason": "stop"}),
        ("openllmetry/test_meta_llama3_completion.yaml", "anthropic",
         {"stop_reason": "end_turn",
          "usage": {"input_tokens": 8, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                    "output_tokens": 35}}),
        ("openllmetry/test_meta_llama3_completion.yaml", "nova",
         {"stopReason": "end_turn",
          "usage": {"inputTokens": 8, "outputTokens": 35, "totalTokens": 43,
                    "cacheReadInputTokenCount": 0, "cacheWriteInputTokenCount": 0}}),
        # Guardrail-masked Nova body: usage has input only; the trace is carried along.
        ("openllmetry/test_nova_completion.yaml", "anthropic",
         {"usage": {"input_tokens": 30, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                    "output_tokens": 0}}),
    ],
)
def test_recorded_responses(name: str, source: str, check: dict[str, Any]) -> None:
    item = interaction(name)
    target = FAMILIES_BY_MODEL[item.model_id.removeprefix("us.")]
    upstream = json.loads(item.body)
    body = translate_response(source, target, upstream, MODEL_IDS[source])
    assert {key: body[key] for key in check} == check
    text = "".join(block.text for block in FAMILIES[target].response_to_neutral(upstream).content)
    assert "".join(block.text for block in FAMILIES[source].response_to_neutral(body).content) == text
    assert {k: v for k, v in body.items() if k.startswith("amazon-bedrock-")} == {
        k: v for k, v in upstream.items() if k.startswith("amazon-bedrock-")}
    if source == "anthropic":
        assert AnthropicMessage.model_validate(body).content[0].text == text  # type: ignore[union-attr]
    # And back again: the same answer in the target's shape.
    again = translate_response(target, source, body, item.model_id)
    assert FAMILIES[target].response_to_neutral(again).content == FAMILIES[target].response_to_neutral(upstream).content


@pytest.mark.parametrize(
    ("nova_reason", "claude_reason", "llama_reason"),
    [
        ("end_turn", "end_turn", "stop"), ("max_tokens", "max_tokens", "length"),
        ("stop_sequence", "stop_sequence", "stop"), ("tool_use", "tool_use", "stop"),
        ("content_filtered", "refusal", "stop"), ("guardrail_intervened", "refusal", "stop"),
        ("model_context_window_exceeded", "model_context_window_exceeded", "length"),
    ],
)
def test_stop_reasons(nova_reason: str, claude_reason: str, llama_reason: str) -> None:
    body = {"output": {"message": {"role": "assistant", "content": [{"text": "x"}]}}, "stopReason": nova_reason,
            "usage": {"inputTokens": 1, "outputTokens": 1}}
    assert translate_response("anthropic", "nova", body, CLAUDE)["stop_reason"] == claude_reason
    assert translate_response("llama", "nova", body, "meta.llama3-8b-instruct-v1:0")["stop_reason"] == llama_reason


def test_adjacent_text_blocks_become_one() -> None:
    body = {"output": {"message": {"role": "assistant", "content": [{"text": "On"}, {"text": " their"}]}},
            "stopReason": "end_turn", "usage": {}}
    assert translate_response("anthropic", "nova", body, CLAUDE)["content"] == [{"type": "text", "text": "On their"}]


@pytest.mark.parametrize(
    ("model_id", "name"),
    [
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku-20241022"),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5-20250929"),
        ("arn:aws:bedrock:us-east-1:1:inference-profile/eu.anthropic.claude-3-7-sonnet-20250219-v1:0",
         "claude-3-7-sonnet-20250219"),
        ("arn:aws:bedrock:us-east-1:1:application-inference-profile/abc",
         "arn:aws:bedrock:us-east-1:1:application-inference-profile/abc"),
    ],
)
def test_model_name(model_id: str, name: str) -> None:
    assert anthropic.model_name(model_id) == name


# --- Converse --------------------------------------------------------------------------

CONVERSE = {
    "messages": [
        {"role": "user", "content": [{"text": "Hi"}, {"cachePoint": {"type": "default"}}]},
        {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "sig"}}},
            {"reasoningContent": {"reasoningText": {"text": "unsigned"}}},
            {"text": "Hello"},
        ]},
        {"role": "user", "content": [{"text": "More"}]},
    ],
    "system": [{"text": "Be brief."}, {"cachePoint": {"type": "default"}}],
    "inferenceConfig": {"maxTokens": 100, "temperature": 0.3},
    "toolConfig": {"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object"}}}},
                             {"cachePoint": {"type": "default"}}]},
    "additionalModelRequestFields": {"anthropic_beta": ["x"], "thinking": {"type": "enabled", "budget_tokens": 1024},
                                     "top_k": 40},
    "additionalModelResponseFieldPaths": ["/stop_sequence"],
    "guardrailConfig": {"guardrailIdentifier": "g", "guardrailVersion": "1"},
}


def test_converse_to_nova_drops_claude_fields_and_maps_top_k() -> None:
    original = copy.deepcopy(CONVERSE)
    out = translate_converse_request(CONVERSE, "us.amazon.nova-pro-v1:0")
    assert CONVERSE == original  # not mutated
    assert out["additionalModelRequestFields"] == {"inferenceConfig": {"topK": 40}}
    assert "additionalModelResponseFieldPaths" not in out
    assert out["messages"][1]["content"] == [{"text": "Hello"}]
    assert out["messages"][0]["content"] == CONVERSE["messages"][0]["content"]  # Nova caches too
    assert {k: out[k] for k in ("system", "toolConfig", "inferenceConfig", "guardrailConfig")} == {
        k: CONVERSE[k] for k in ("system", "toolConfig", "inferenceConfig", "guardrailConfig")}


def test_converse_to_claude_keeps_signed_reasoning_and_maps_nova_top_k() -> None:
    body = {**CONVERSE, "additionalModelRequestFields": {"inferenceConfig": {"topK": 20},
                                                         "reasoningConfig": {"type": "enabled"}}}
    out = translate_converse_request(body, "anthropic.claude-3-7-sonnet-20250219-v1:0")
    assert out["additionalModelRequestFields"] == {"top_k": 20}
    assert out["additionalModelResponseFieldPaths"] == ["/stop_sequence"]
    assert out["messages"][1]["content"] == [CONVERSE["messages"][1]["content"][0], {"text": "Hello"}]


def test_converse_to_llama_drops_cache_points_and_model_fields() -> None:
    out = translate_converse_request(CONVERSE, "us.meta.llama3-3-70b-instruct-v1:0")
    assert "additionalModelRequestFields" not in out
    assert out["messages"][0]["content"] == [{"text": "Hi"}]
    assert out["system"] == [{"text": "Be brief."}]
    assert out["toolConfig"]["tools"] == [CONVERSE["toolConfig"]["tools"][0]]  # type: ignore[index]


def test_converse_same_family_is_unchanged() -> None:
    body = {k: v for k, v in CONVERSE.items() if k != "messages"}
    body["messages"] = [CONVERSE["messages"][0], {"role": "assistant", "content": [
        {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "sig"}}}, {"text": "Hello"}]}]
    assert translate_converse_request(body, "global.anthropic.claude-sonnet-4-5-20250929-v1:0") == body
    nova_body = {"messages": [{"role": "user", "content": [{"text": "Hi"}]}],
                 "additionalModelRequestFields": {"inferenceConfig": {"topK": 5}}}
    assert translate_converse_request(nova_body, "amazon.nova-micro-v1:0") == nova_body
