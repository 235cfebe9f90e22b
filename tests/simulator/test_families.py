"""Every model family through the simulator with real boto3, and the raw bytes
and headers it answered fed to the proxy's usage watchers: what the meter
reads must be exactly what the simulator billed (its request log)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import botocore.exceptions
import pytest

from adapters import FAMILIES, family_of
from adapters.usage import Usage
from adapters.watch import BodyUsageWatcher, StreamUsageWatcher
from simulator import families
from tests.simulator.harness import CLAUDE, NOVA, SimServer, claude_body, nova_body

SYSTEM = "You are terse."


def _messages(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


#: name → (model id, native request body for a prompt and a max-token count).
TEXT_MODELS: dict[str, tuple[str, Any]] = {
    "claude": (CLAUDE, lambda p, n: claude_body(p, n)),
    "nova": (NOVA, lambda p, n: nova_body(p, n)),
    "titan": ("amazon.titan-text-express-v1",
              lambda p, n: {"inputText": p, "textGenerationConfig": {"maxTokenCount": n, "temperature": 0.5}}),
    "titan-tg1": ("amazon.titan-tg1-large", lambda p, n: {"inputText": p, "textGenerationConfig": {"maxTokenCount": n}}),
    "llama3": ("meta.llama3-70b-instruct-v1:0", lambda p, n: {"prompt": p, "max_gen_len": n, "temperature": 0.1}),
    "llama4": ("us.meta.llama4-maverick-17b-instruct-v1:0", lambda p, n: {"prompt": p, "max_gen_len": n}),
    "mistral-text": ("mistral.mistral-7b-instruct-v0:2",
                     lambda p, n: {"prompt": f"<s>[INST] {p} [/INST]", "max_tokens": n, "top_k": 50}),
    "mistral-chat": ("mistral.mistral-large-2407-v1:0", lambda p, n: {"messages": _messages(p), "max_tokens": n}),
    "pixtral": ("us.mistral.pixtral-large-2502-v1:0",
                lambda p, n: {"messages": [{"role": "user", "content": [{"type": "text", "text": p}]}],
                              "max_tokens": n}),
    "cohere-command": ("cohere.command-text-v14", lambda p, n: {"prompt": p, "max_tokens": n, "temperature": 0.5}),
    "cohere-command-r": ("cohere.command-r-plus-v1:0",
                         lambda p, n: {"message": p, "preamble": SYSTEM, "max_tokens": n,
                                       "chat_history": [{"role": "USER", "message": "Hi"},
                                                        {"role": "CHATBOT", "message": "Hello."}]}),
    "jamba": ("ai21.jamba-1-5-mini-v1:0", lambda p, n: {"messages": _messages(p), "max_tokens": n}),
    "deepseek": ("us.deepseek.r1-v1:0", lambda p, n: {"prompt": p, "max_tokens": n}),
    "gpt-oss": ("openai.gpt-oss-20b-1:0", lambda p, n: {"messages": _messages(p), "max_completion_tokens": n}),
}
#: Families whose native body and stream carry their own usage (the others:
#: headers and invocation metrics only, BEDROCK_WIRE.md §4).
NATIVE_USAGE = {"claude", "nova", "titan", "titan-tg1", "cohere-command-r", "jamba", "gpt-oss", "llama3", "llama4"}
CACHING = {"claude", "nova"}
#: name → (model id, request body)
EMBEDDING_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "titan-v1": ("amazon.titan-embed-text-v1", {"inputText": "Hello World!"}),
    "titan-v2": ("amazon.titan-embed-text-v2:0", {"inputText": "Hello, world!", "dimensions": 256, "normalize": True}),
    "cohere-v3": ("cohere.embed-english-v3",
                  {"texts": ["Hello, world!", "Bonjour"], "input_type": "search_query", "truncate": "NONE"}),
    "cohere-v4": ("cohere.embed-v4:0", {"texts": ["Test dimensions setting"], "input_type": "search_query",
                                        "output_dimension": 512}),
}


def _billed(sim: SimServer, request_id: str) -> Usage:
    return Usage(**sim.record(request_id)["usage"])


def _adapter(model_id: str) -> Any:
    return FAMILIES[family_of(model_id)]


def _native_usage(name: str, model_id: str) -> bool:
    """Whether the family's adapter should find the usage in the native body/chunks
    (the `generic` adapter reads none: the Llama one lands separately)."""
    return name in NATIVE_USAGE and family_of(model_id) != "generic"


class _Tee:
    """Keeps a copy of the raw event-stream bytes while botocore parses them.

    botocore's `EventStream` reads its urllib3 response through `_raw_stream.stream()`
    lazily, on the first iteration, so wrapping it before iterating sees every byte.
    """

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.data = bytearray()

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        for chunk in self.raw.stream(*args, **kwargs):
            self.data += chunk
            yield chunk

    def close(self) -> None:
        self.raw.close()


def _stream(bedrock: Any, model_id: str, body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]], bytes]:
    """(response metadata, decoded chunks as boto3 yields them, raw bytes on the wire)."""
    response = bedrock.invoke_model_with_response_stream(modelId=model_id, body=body)
    tee = _Tee(response["body"]._raw_stream)
    response["body"]._raw_stream = tee
    chunks = [json.loads(event["chunk"]["bytes"]) for event in response["body"]]
    return response, chunks, bytes(tee.data)


@pytest.mark.parametrize("name", sorted(TEXT_MODELS))
def test_invoke_model_is_metered_exactly(sim: SimServer, bedrock: Any, name: str, prompt: str) -> None:
    model_id, make = TEXT_MODELS[name]
    request = json.dumps(make(prompt, 200)).encode()
    response = bedrock.invoke_model(modelId=model_id, body=request)
    raw = response["body"].read()
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    billed = _billed(sim, response["ResponseMetadata"]["RequestId"])
    assert billed.input_tokens > 0 and billed.output_tokens > 0
    assert int(headers["x-amzn-bedrock-input-token-count"]) == billed.input_tokens
    assert int(headers["x-amzn-bedrock-output-token-count"]) == billed.output_tokens
    assert ("x-amzn-bedrock-cache-read-input-token-count" in headers) is (name in CACHING)

    watcher = BodyUsageWatcher("InvokeModel", model_id, request)
    watcher.feed(raw)
    usage = watcher.finish(200, headers)
    assert usage == billed and not usage.estimated

    # The body alone (no headers): exact for families that report usage in it.
    body_usage = _adapter(model_id).usage_from_body(json.loads(raw))
    assert body_usage == (billed if _native_usage(name, model_id) else None)


@pytest.mark.parametrize("name", sorted(TEXT_MODELS))
def test_invoke_model_with_response_stream_is_metered_exactly(
    sim: SimServer, bedrock: Any, name: str, prompt: str
) -> None:
    model_id, make = TEXT_MODELS[name]
    request = json.dumps(make(prompt + " [[sim:words=45]]", 60)).encode()
    response, chunks, data = _stream(bedrock, model_id, request)
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["content-type"] == "application/vnd.amazon.eventstream"
    assert not [header for header in headers if header.endswith("token-count")]
    billed = _billed(sim, response["ResponseMetadata"]["RequestId"])
    assert billed.output_tokens == 45
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert all("amazon-bedrock-invocationMetrics" not in chunk for chunk in chunks[:-1])
    assert (metrics["inputTokenCount"], metrics["outputTokenCount"]) == (billed.input_tokens, 45)
    assert ("cacheReadInputTokenCount" in metrics) is (name in CACHING)

    watcher = StreamUsageWatcher("InvokeModelWithResponseStream", model_id, request)
    forwarded = b"".join(watcher.feed(data[i : i + 97]) for i in range(0, len(data), 97))
    assert forwarded == data and watcher.pending == 0
    assert watcher.complete and watcher.error is None
    usage = watcher.finish()
    assert usage == billed and not usage.estimated

    adapter = _adapter(model_id)
    native: Usage | None = None
    text = ""
    for chunk in chunks:
        native = adapter.usage_from_chunk(chunk, native)
        text += adapter.output_text(chunk)
    assert len(text.split()) == 45  # one word per token, whatever the chunking
    # gpt-oss streams usage only on request (`test_gpt_oss_stream_usage_only_when_asked`).
    assert native == (billed if _native_usage(name, model_id) and name != "gpt-oss" else None)


@pytest.mark.parametrize("name", sorted(EMBEDDING_MODELS))
def test_embeddings_bill_input_only(sim: SimServer, bedrock: Any, name: str) -> None:
    model_id, document = EMBEDDING_MODELS[name]
    request = json.dumps(document).encode()
    response = bedrock.invoke_model(modelId=model_id, body=request)
    raw = response["body"].read()
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    billed = _billed(sim, response["ResponseMetadata"]["RequestId"])
    assert billed.input_tokens > 0 and billed.output_tokens == 0
    assert headers["x-amzn-bedrock-input-token-count"] == str(billed.input_tokens)
    assert "x-amzn-bedrock-output-token-count" not in headers
    assert int(headers["x-amzn-bedrock-invocation-latency"]) >= 1

    watcher = BodyUsageWatcher("InvokeModel", model_id, request)
    watcher.feed(raw)
    assert watcher.finish(200, headers) == Usage(billed.input_tokens)
    body = json.loads(raw)
    assert _adapter(model_id).usage_from_body(body) == (Usage(billed.input_tokens) if "titan" in name else None)
    with pytest.raises(bedrock.exceptions.ValidationException, match="unsupported for streaming"):
        bedrock.invoke_model_with_response_stream(modelId=model_id, body=request)


@pytest.mark.parametrize(("name", "size"), [("titan-v1", 1536), ("titan-v2", 256), ("cohere-v3", 1024),
                                            ("cohere-v4", 512)])
def test_embedding_bodies(bedrock: Any, name: str, size: int) -> None:
    model_id, document = EMBEDDING_MODELS[name]

    def call() -> dict[str, Any]:
        return json.loads(bedrock.invoke_model(modelId=model_id, body=json.dumps(document))["body"].read())

    body, again = call(), call()
    # Deterministic vectors; Cohere's `id` is the request id.
    assert {k: v for k, v in body.items() if k != "id"} == {k: v for k, v in again.items() if k != "id"}
    if name.startswith("titan"):
        vectors = [body["embedding"]]
        assert body["inputTextTokenCount"] > 0
        assert ("embeddingsByType" in body) is (name == "titan-v2")
    else:
        assert set(body) == {"embeddings", "id", "response_type", "texts"}
        by_type = name == "cohere-v4"
        assert body["response_type"] == ("embeddings_by_type" if by_type else "embeddings_floats")
        vectors = body["embeddings"]["float"] if by_type else body["embeddings"]
        assert len(vectors) == len(document["texts"])
    for vector in vectors:
        assert len(vector) == size
        assert abs(sum(v * v for v in vector) - 1) < 1e-4


@pytest.mark.parametrize("name", sorted(set(TEXT_MODELS) - {"claude", "nova"}))
def test_count_tokens_matches_invoke_model(bedrock: Any, name: str, prompt: str) -> None:
    model_id, make = TEXT_MODELS[name]
    body = json.dumps(make(prompt, 50))
    response = bedrock.invoke_model(modelId=model_id, body=body)
    billed = int(response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"])
    base = model_id.removeprefix("us.")
    assert bedrock.count_tokens(modelId=base, input={"invokeModel": {"body": body}})["inputTokens"] == billed


@pytest.mark.parametrize(("name", "keys", "reason"), [
    ("titan", {"inputTextTokenCount", "results"}, "FINISH"),
    ("llama3", {"generation", "prompt_token_count", "generation_token_count", "stop_reason"}, "stop"),
    ("mistral-text", {"outputs"}, "stop"),
    ("mistral-chat", {"choices"}, "stop"),
    ("cohere-command", {"id", "generations", "prompt"}, "COMPLETE"),
    ("cohere-command-r", {"response_id", "text", "generation_id", "chat_history", "finish_reason", "meta"}, "COMPLETE"),
    ("jamba", {"id", "choices", "usage"}, "stop"),
    ("deepseek", {"choices"}, "stop"),
    ("gpt-oss", {"id", "object", "created", "model", "choices", "usage"}, "stop"),
])
def test_native_response_shapes(bedrock: Any, name: str, keys: set[str], reason: str, prompt: str) -> None:
    model_id, make = TEXT_MODELS[name]
    body = json.loads(bedrock.invoke_model(modelId=model_id,
                                           body=json.dumps(make(prompt + " [[sim:words=12]]", 50)))["body"].read())
    assert set(body) == keys
    text = {
        "titan": lambda: body["results"][0]["outputText"],
        "llama3": lambda: body["generation"],
        "mistral-text": lambda: body["outputs"][0]["text"],
        "mistral-chat": lambda: body["choices"][0]["message"]["content"],
        "cohere-command": lambda: body["generations"][0]["text"],
        "cohere-command-r": lambda: body["text"],
        "jamba": lambda: body["choices"][0]["message"]["content"],
        "deepseek": lambda: body["choices"][0]["text"],
        "gpt-oss": lambda: body["choices"][0]["message"]["content"],
    }[name]()
    assert len(text.replace("</reasoning>", "</reasoning> ").split()) == 12
    found = json.dumps(body)
    assert f'"{reason}"' in found
    if name == "gpt-oss":
        assert text.startswith("<reasoning>") and "</reasoning>" in text
        assert body["object"] == "chat.completion" and body["model"] == model_id
    if name == "cohere-command-r":
        assert body["meta"]["billed_units"]["output_tokens"] == 12
        assert [turn["role"] for turn in body["chat_history"]] == ["USER", "CHATBOT", "USER", "CHATBOT"]


@pytest.mark.parametrize(("name", "reason"), [
    ("titan", "LENGTH"), ("llama3", "length"), ("mistral-text", "length"), ("cohere-command", "MAX_TOKENS"),
    ("deepseek", "length"), ("jamba", "length"),
])
def test_truncated_stop_reasons(bedrock: Any, name: str, reason: str, prompt: str) -> None:
    model_id, make = TEXT_MODELS[name]
    body = json.dumps(make(prompt + " [[sim:words=40]]", 5))
    response = bedrock.invoke_model(modelId=model_id, body=body)
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-output-token-count"] == "5"
    assert f'"{reason}"' in response["body"].read().decode()


def test_llama_stream_chunks(bedrock: Any, prompt: str) -> None:
    model_id, make = TEXT_MODELS["llama3"]
    _, chunks, _ = _stream(bedrock, model_id, json.dumps(make(prompt + " [[sim:words=6]]", 50)).encode())
    assert [chunk["generation_token_count"] for chunk in chunks] == [1, 2, 3, 4, 5, 6]
    assert chunks[0]["prompt_token_count"] > 0
    assert all(chunk["prompt_token_count"] is None for chunk in chunks[1:])
    assert [chunk["stop_reason"] for chunk in chunks] == [None] * 5 + ["stop"]


def test_titan_stream_chunks(bedrock: Any, prompt: str) -> None:
    model_id, make = TEXT_MODELS["titan"]
    _, chunks, _ = _stream(bedrock, model_id, json.dumps(make(prompt + " [[sim:words=90]]", 500)).encode())
    assert len(chunks) == 3  # many tokens per chunk, as the recordings
    assert "inputTextTokenCount" in chunks[0] and "totalOutputTextTokenCount" not in chunks[0]
    assert chunks[-1]["totalOutputTextTokenCount"] == 90 and chunks[-1]["completionReason"] == "FINISH"
    assert "inputTextTokenCount" not in chunks[-1]


@pytest.mark.parametrize(("name", "first", "last"), [
    ("cohere-command", {"is_finished", "text"}, {"is_finished", "finish_reason"}),
    ("cohere-command-r", {"is_finished", "event_type", "generation_id"},
     {"is_finished", "event_type", "response", "finish_reason"}),
    ("mistral-text", {"outputs"}, {"outputs"}),
    ("mistral-chat", {"choices"}, {"choices"}),
    ("deepseek", {"choices"}, {"choices"}),
    ("jamba", {"id", "choices", "usage"}, {"id", "choices", "usage"}),
    ("gpt-oss", {"id", "object", "created", "model", "choices"}, {"id", "object", "created", "model", "choices"}),
])
def test_stream_chunk_shapes(bedrock: Any, name: str, first: set[str], last: set[str], prompt: str) -> None:
    model_id, make = TEXT_MODELS[name]
    _, chunks, _ = _stream(bedrock, model_id, json.dumps(make(prompt + " [[sim:words=4]]", 50)).encode())
    assert set(chunks[0]) == first
    assert set(chunks[-1]) - {"amazon-bedrock-invocationMetrics"} == last


def test_gpt_oss_stream_usage_only_when_asked(sim: SimServer, bedrock: Any, prompt: str) -> None:
    model_id, make = TEXT_MODELS["gpt-oss"]
    request = {**make(prompt + " [[sim:words=8]]", 50), "stream_options": {"include_usage": True}}
    response, chunks, data = _stream(bedrock, model_id, json.dumps(request).encode())
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8
    billed = _billed(sim, response["ResponseMetadata"]["RequestId"])
    native = None
    for chunk in chunks:
        native = FAMILIES["openai"].usage_from_chunk(chunk, native)
    assert native == billed


@pytest.mark.parametrize(("name", "body", "message"), [
    ("titan", {"prompt": "x"}, r"extraneous key \[prompt\]"),
    ("titan", {"textGenerationConfig": {"maxTokenCount": 5}}, r"required key \[inputText\]"),
    ("titan", {"inputText": "x", "textGenerationConfig": {"max_tokens": 5}}, r"extraneous key \[max_tokens\]"),
    ("llama3", {"inputText": "x"}, r"extraneous key \[inputText\]"),
    ("llama3", {"max_gen_len": 5}, r"required key \[prompt\]"),
    ("llama3", {"prompt": "x", "max_gen_len": 0}, "positive integer"),
    ("mistral-text", {"prompt": "x", "max_gen_len": 5}, r"extraneous key \[max_gen_len\]"),
    ("cohere-command", {"max_tokens": 5}, r"required key \[prompt\]"),
    ("jamba", {"prompt": "x"}, r"required key \[messages\]"),
    ("deepseek", {"prompt": "x", "max_tokens": 40000}, "at most 32768"),
    ("gpt-oss", {"messages": [{"role": "user", "content": "x"}], "stream": True}, "stream must be false"),
])
def test_malformed_native_bodies(bedrock: Any, name: str, body: dict[str, Any], message: str) -> None:
    with pytest.raises(bedrock.exceptions.ValidationException, match=message):
        bedrock.invoke_model(modelId=TEXT_MODELS[name][0], body=json.dumps(body))


@pytest.mark.parametrize(("model_id", "body", "message"), [
    ("cohere.embed-english-v3", {"texts": ["x"]}, r"required key \[input_type\]"),
    ("cohere.embed-english-v3", {"inputText": "x"}, r"required key \[texts\]"),
    ("amazon.titan-embed-text-v2:0", {"inputText": "x", "dimensions": 100}, "dimensions must be one of"),
    ("amazon.titan-embed-text-v1", {"texts": ["x"]}, r"extraneous key \[texts\]"),
])
def test_malformed_embedding_bodies(bedrock: Any, model_id: str, body: dict[str, Any], message: str) -> None:
    with pytest.raises(bedrock.exceptions.ValidationException, match=message):
        bedrock.invoke_model(modelId=model_id, body=json.dumps(body))


def test_gpt_oss_stream_flag_must_match_the_operation(bedrock: Any) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "x"}], "stream": False})
    with pytest.raises(bedrock.exceptions.ValidationException, match="stream must be true"):
        bedrock.invoke_model_with_response_stream(modelId=TEXT_MODELS["gpt-oss"][0], body=body)


@pytest.mark.parametrize("name", ["titan", "llama3", "cohere-command", "gpt-oss"])
def test_stream_error_directive_is_estimated(sim: SimServer, bedrock: Any, name: str, prompt: str) -> None:
    model_id, make = TEXT_MODELS[name]
    request = json.dumps(make(prompt + " [[sim:stream-error]] [[sim:words=90]]", 200)).encode()
    response = bedrock.invoke_model_with_response_stream(modelId=model_id, body=request)
    tee = _Tee(response["body"]._raw_stream)
    response["body"]._raw_stream = tee
    # botocore leaves the connection open when it raises: close it, or it leaks.
    with closing(response["body"]), pytest.raises(botocore.exceptions.EventStreamError,
                                                  match="modelStreamErrorException"):
        list(response["body"])
    watcher = StreamUsageWatcher("InvokeModelWithResponseStream", model_id, request)
    watcher.feed(bytes(tee.data))
    usage = watcher.finish()
    assert watcher.exception_type == "modelStreamErrorException" and not watcher.complete
    assert usage.estimated and usage.input_tokens > 0
    assert sim.record(response["ResponseMetadata"]["RequestId"])["outcome"] == "stream-error"


@pytest.mark.parametrize(("model_id", "family"), [
    ("anthropic.claude-3-haiku-20240307-v1:0", "anthropic"),
    ("amazon.nova-micro-v1:0", "nova"),
    ("amazon.nova-canvas-v1:0", None),
    ("amazon.titan-text-premier-v1:0", "titan"),
    ("amazon.titan-tg1-large", "titan"),
    ("amazon.titan-embed-text-v2:0", "embeddings"),
    ("amazon.titan-image-generator-v2:0", None),
    ("cohere.embed-multilingual-v3", "embeddings"),
    ("cohere.command-light-text-v14", "cohere"),
    ("cohere.command-r-v1:0", "cohere"),
    ("meta.llama3-2-1b-instruct-v1:0", "llama"),
    ("mistral.mixtral-8x7b-instruct-v0:1", "mistral"),
    ("ai21.jamba-instruct-v1:0", "ai21"),
    ("ai21.j2-ultra-v1", None),  # Jurassic-2: end of life
    ("deepseek.r1-v1:0", "deepseek"),
    ("openai.gpt-oss-120b-1:0", "openai"),
    ("stability.sd3-5-large-v1:0", None),
    (None, None),
])
def test_simulator_family_routing(model_id: str | None, family: str | None) -> None:
    module = families.family_of(model_id)
    assert (module.__name__.rpartition(".")[2] if module else None) == family
