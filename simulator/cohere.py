"""Cohere Command and Command R / R+ native bodies (Embed is in `embeddings`).

* Command (`cohere.command-text-v14`, `-light-text-v14`): request `{"prompt",
  "max_tokens", …}`, response `{"id", "generations": [{"id", "text",
  "finish_reason"}], "prompt"}` with no usage; the `id` is Bedrock's request id
  (openllmetry `test_cohere_completion.yaml`). Stream chunks `{"is_finished":
  false, "text"}`, then `{"finish_reason", "is_finished": true}` (dd-trace-py
  `cohere_invoke_stream_single_output.yaml`).
* Command R / R+ (`cohere.command-r-v1:0`, `-r-plus-v1:0`): request
  `{"message", "chat_history", "preamble", "documents", "tools", "max_tokens"}`,
  response with `meta.billed_units`; the stream ends with a `stream-end` chunk
  holding the whole response. Which one a request is follows its body.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from simulator.generate import Completion, Prompt, PromptBuilder, malformed
from simulator.native import require, setting, stop_reason, text_prompt

__all__ = ["parse_request", "response_body", "stream_events"]

#: Documented defaults: Command generates 20 tokens unless told otherwise.
COMMAND_MAX_TOKENS = 20
COMMAND_R_MAX_TOKENS = 4000


def _is_chat(request: Mapping[str, Any]) -> bool:
    return "message" in request


def parse_request(body: Mapping[str, Any]) -> Prompt:
    if not _is_chat(body):
        return text_prompt(body, "prompt", setting(body, "max_tokens", COMMAND_MAX_TOKENS))
    require(body, "message")
    builder = PromptBuilder()
    for key in ("tools", "documents"):
        if isinstance(body.get(key), list):
            for item in body[key]:
                builder.structure(item)
    if body.get("preamble"):
        builder.text(body["preamble"])
    history = body.get("chat_history") or []
    if not isinstance(history, list):
        raise malformed("chat_history: expected type: JSONArray")
    for turn in history:
        if not isinstance(turn, Mapping):
            raise malformed("chat_history: expected type: JSONObject")
        builder.message(turn.get("role"))
        builder.text(turn.get("message"))
    builder.message("USER")
    builder.text(body["message"])
    return builder.build(setting(body, "max_tokens", COMMAND_R_MAX_TOKENS))


def _reason(completion: Completion) -> str:
    return stop_reason(completion, "COMPLETE", "MAX_TOKENS")


def _ids(request_id: str) -> tuple[str, str]:
    """(response id, generation id): stable per request."""
    return request_id, str(uuid.uuid5(uuid.NAMESPACE_OID, request_id))


def _chat_response(completion: Completion, request: Mapping[str, Any], request_id: str) -> dict[str, Any]:
    response_id, generation_id = _ids(request_id)
    usage = completion.usage
    counts = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
    history = [turn for turn in request.get("chat_history") or [] if isinstance(turn, Mapping)]
    return {
        "response_id": response_id,
        "text": completion.text,
        "generation_id": generation_id,
        "chat_history": [*history, {"role": "USER", "message": request["message"]},
                         {"role": "CHATBOT", "message": completion.text}],
        "finish_reason": _reason(completion),
        "meta": {"api_version": {"version": "1"}, "billed_units": counts, "tokens": dict(counts)},
    }


def response_body(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> dict[str, Any]:
    if _is_chat(request):
        return _chat_response(completion, request, request_id)
    response_id, generation_id = _ids(request_id)
    return {
        "id": response_id,
        "generations": [{"id": generation_id, "text": completion.text, "finish_reason": _reason(completion)}],
        "prompt": request["prompt"],
    }


def stream_events(completion: Completion, request: Mapping[str, Any], model: str, request_id: str) -> list[dict[str, Any]]:
    if not _is_chat(request):
        events: list[dict[str, Any]] = [{"is_finished": False, "text": delta} for delta in completion.deltas]
        events.append({"finish_reason": _reason(completion), "is_finished": True})
        return events
    events = [{"is_finished": False, "event_type": "stream-start", "generation_id": _ids(request_id)[1]}]
    events += [{"is_finished": False, "event_type": "text-generation", "text": delta} for delta in completion.deltas]
    events.append({
        "is_finished": True,
        "event_type": "stream-end",
        "response": _chat_response(completion, request, request_id),
        "finish_reason": _reason(completion),
    })
    return events
