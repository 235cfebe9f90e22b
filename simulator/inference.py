"""The five model operations: InvokeModel (+ stream), Converse (+ stream), CountTokens.

Each handler parses the body into a `Prompt` (family module), lets
`generate.complete` decide the answer and its usage (prompt cache included),
and renders it in the operation's wire shape. InvokeModel needs a family the
simulator speaks (`families`: Claude, Nova, Titan, Llama, Mistral, Cohere,
AI21 Jamba, DeepSeek, gpt-oss, and the Titan/Cohere embedding models);
Converse works for any model id.

Token-count headers follow what Bedrock sends (BEDROCK_WIRE.md §1.1): input,
output and latency for every text model, the two cache counts only for the
families that cache (Claude, Nova), the input count alone for embeddings.
"""

from __future__ import annotations

import binascii
import json
from base64 import b64decode
from collections.abc import Awaitable, Callable, Mapping
from types import ModuleType
from typing import Any

from adapters.usage import Usage
from proxy.errors import ValidationException
from simulator import converse, embeddings
from simulator.context import Call, elapsed_ms
from simulator.families import caches_prompts, family_of
from simulator.generate import Completion, Prompt, complete, malformed
from simulator.profiles import INVALID_MODEL
from simulator.wire import chunk_frame, converse_frame, run_stream, send_json, stream_headers

__all__ = ["HANDLERS", "family_of", "INVALID_MODEL"]



def _family(call: Call) -> ModuleType:
    family = family_of(call.base_model)
    if family is None:
        raise ValidationException(INVALID_MODEL)
    return family


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise malformed("expected type: JSONObject, found: malformed JSON") from None
    if not isinstance(document, dict):
        raise malformed(f"expected type: JSONObject, found: {type(document).__name__}")
    return document


def _complete(call: Call, prompt: Prompt) -> Completion:
    hits = call.state.cache.resolve(call.base_model or "", prompt.cache_points)
    completion = complete(prompt, call.directives, hits, call.state.config.seed)
    call.record["usage"] = _usage_record(completion.usage)
    call.record["stop_reason"] = completion.stop_reason
    return completion


def _usage_record(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
    }


def _invocation_metrics(usage: Usage, latency: int, first_byte: int, caching: bool) -> dict[str, int]:
    metrics = {
        "inputTokenCount": usage.input_tokens,
        "outputTokenCount": usage.output_tokens,
        "invocationLatency": latency,
        "firstByteLatency": first_byte,
    }
    if caching:
        metrics["cacheReadInputTokenCount"] = usage.cache_read_tokens
        metrics["cacheWriteInputTokenCount"] = usage.cache_write_tokens
    return metrics


def _token_headers(call: Call, usage: Usage, *, output: bool, caching: bool) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-amzn-bedrock-input-token-count", str(usage.input_tokens).encode())]
    if output:
        headers.append((b"x-amzn-bedrock-output-token-count", str(usage.output_tokens).encode()))
    headers.append((b"x-amzn-bedrock-invocation-latency", str(elapsed_ms(call.started)).encode()))
    if caching:
        headers.append((b"x-amzn-bedrock-cache-read-input-token-count", str(usage.cache_read_tokens).encode()))
        headers.append((b"x-amzn-bedrock-cache-write-input-token-count", str(usage.cache_write_tokens).encode()))
    return headers


async def _hold_before_head(call: Call) -> None:
    """Non-streaming operations honour `[[sim:hold=KEY]]` before the response head."""
    if call.directives.hold:
        call.record["outcome"] = "held"
        released = await call.state.gates.wait(call.directives.hold)
        call.record["outcome"] = "ok" if released else "hold-timeout"


_LATENCY, _TIER = b"x-amzn-bedrock-performanceconfig-latency", b"x-amzn-bedrock-service-tier"


def _echoed_headers(call: Call) -> list[tuple[bytes, bytes]]:
    """InvokeModel echoes the performance and service-tier headers it applied
    (`[[sim:served-tier=…]]` / `[[sim:served-latency=…]]`: what it says served instead)."""
    served = {_TIER: call.directives.served_tier, _LATENCY: call.directives.served_latency}
    echoed = {}
    for name, value in call.record["raw_headers"]:
        lowered = name.lower()
        if lowered in served:
            echoed[lowered] = value
    echoed.update({name: value.encode() for name, value in served.items() if value})
    return list(echoed.items())


def _as_served(call: Call, request: dict[str, Any]) -> dict[str, Any]:
    """The Converse request as the response echoes it, with the served-tier directives applied."""
    directives = call.directives
    if directives.served_tier is None and directives.served_latency is None:
        return request
    request = dict(request)
    if directives.served_tier:
        request["serviceTier"] = {"type": directives.served_tier}
    if directives.served_latency:
        request["performanceConfig"] = {"latency": directives.served_latency}
    return request


async def _embed(call: Call, request: dict[str, Any]) -> None:
    tokens, body = embeddings.embed(request, call.base_model or "", call.request_id)
    usage = Usage(input_tokens=tokens)
    call.record["usage"] = _usage_record(usage)
    await _hold_before_head(call)
    await send_json(call, body, [*_token_headers(call, usage, output=False, caching=False), *_echoed_headers(call)])
    call.record.setdefault("outcome", "ok")


async def invoke(call: Call) -> None:
    family = _family(call)
    request = _json_object(call.body)
    if family is embeddings:
        await _embed(call, request)
        return
    completion = _complete(call, family.parse_request(request))
    body = family.response_body(completion, request, call.base_model, call.request_id)
    await _hold_before_head(call)
    headers = _token_headers(call, completion.usage, output=True, caching=caches_prompts(family))
    await send_json(call, body, [*headers, *_echoed_headers(call)])
    call.record.setdefault("outcome", "ok")


async def invoke_stream(call: Call) -> None:
    family = _family(call)
    if family is embeddings:
        raise ValidationException(embeddings.NOT_STREAMABLE)
    request = _json_object(call.body)
    completion = _complete(call, family.parse_request(request))
    events = family.stream_events(completion, request, call.base_model, call.request_id)
    pad = completion.padding
    caching = caches_prompts(family)

    def finalize(event: dict[str, Any], latency: int, first_byte: int) -> None:
        event["amazon-bedrock-invocationMetrics"] = _invocation_metrics(completion.usage, latency, first_byte, caching)

    headers = stream_headers(call.request_id, invoke=True) + _echoed_headers(call)
    await run_stream(call, headers, events, lambda event: chunk_frame(event, pad()), finalize)


async def converse_once(call: Call) -> None:
    request = _json_object(call.body)
    completion = _complete(call, converse.parse_request(request))
    await _hold_before_head(call)
    await send_json(call, converse.response_body(completion, _as_served(call, request), elapsed_ms(call.started)))
    call.record.setdefault("outcome", "ok")


async def converse_stream(call: Call) -> None:
    request = _json_object(call.body)
    completion = _complete(call, converse.parse_request(request))

    def finalize(event: tuple[str, dict[str, Any]], latency: int, _first_byte: int) -> None:
        event[1]["metrics"]["latencyMs"] = latency

    headers = stream_headers(call.request_id, invoke=False)
    events = converse.stream_events(completion, _as_served(call, request))
    await run_stream(call, headers, events, converse_frame, finalize)


async def count_tokens(call: Call) -> None:
    """The uncached size of the prompt: equals input + cache read + cache write
    of the same content sent to InvokeModel or Converse."""
    document = _json_object(call.body)
    given = document.get("input")
    if not isinstance(given, Mapping) or len(given) != 1:
        raise ValidationException("Exactly one of input.converse or input.invokeModel must be set.")
    if "converse" in given:
        request = given["converse"]
        if not isinstance(request, Mapping):
            raise malformed("input.converse: expected type: JSONObject")
        prompt = converse.parse_request(request)
    elif "invokeModel" in given:
        invoke_input = given["invokeModel"]
        raw = invoke_input.get("body") if isinstance(invoke_input, Mapping) else None
        try:
            native = b64decode(raw, validate=True) if isinstance(raw, str) else None
        except (binascii.Error, ValueError):
            native = None
        if native is None:
            raise ValidationException("input.invokeModel.body must be a base64-encoded model request body.")
        prompt = _family(call).parse_request(_json_object(native))
    else:
        raise ValidationException("Exactly one of input.converse or input.invokeModel must be set.")
    call.record["usage"] = {"input_tokens": prompt.tokens}
    await _hold_before_head(call)
    await send_json(call, {"inputTokens": prompt.tokens})
    call.record.setdefault("outcome", "ok")


HANDLERS: dict[str, Callable[[Call], Awaitable[None]]] = {
    "InvokeModel": invoke,
    "InvokeModelWithResponseStream": invoke_stream,
    "Converse": converse_once,
    "ConverseStream": converse_stream,
    "CountTokens": count_tokens,
}
