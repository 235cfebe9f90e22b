"""Embedding models: Amazon Titan Embeddings and Cohere Embed native bodies.

Embeddings bill input tokens only; InvokeModel answers with the
`X-Amzn-Bedrock-Input-Token-Count` header and no output count, and the models
cannot stream (BEDROCK_WIRE.md §1.1, §4). Vectors are deterministic floats of
unit length, seeded by the model and the text.

* Titan (`amazon.titan-embed-text-v1`, `-v2:0`, `-image-v1`): `{"inputText"}`
  (+ v2 `dimensions`, `normalize`, `embeddingTypes`) → `{"embedding",
  "inputTextTokenCount"}`, v2 adds `embeddingsByType` (dd-trace-py
  `amazon_embedding.yaml`, pydantic-ai `TestBedrock.test_titan_v2_with_dimensions.yaml`).
* Cohere (`cohere.embed-english-v3`, `-multilingual-v3`, `cohere.embed-v4:0`):
  `{"texts", "input_type", "truncate"}` (+ v4 `output_dimension`) → `{"embeddings",
  "id", "response_type", "texts"}` with no usage at all; v4 answers
  `embeddings_by_type` (pydantic-ai `TestBedrock.test_cohere_v4_with_dimensions.yaml`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import Any

from proxy.errors import ValidationException
from simulator.generate import Prompt, malformed, text_tokens
from simulator.native import only, require, setting

__all__ = ["MODEL_PREFIXES", "parse_request", "embed", "NOT_STREAMABLE"]

MODEL_PREFIXES = ("amazon.titan-embed-", "cohere.embed-")
NOT_STREAMABLE = "The model is unsupported for streaming."
_TITAN_KEYS = ("inputText", "inputImage", "dimensions", "normalize", "embeddingTypes", "embeddingConfig")
_TITAN_V2_DIMENSIONS = (256, 512, 1024)
_COHERE_V4_DIMENSIONS = (256, 512, 1024, 1536)
_COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering", "image")


def _texts(body: Mapping[str, Any]) -> list[str]:
    """The texts of either body shape, validated."""
    if "texts" in body:
        texts = body["texts"]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise malformed("texts: expected a non-empty JSONArray of String")
        return texts
    only(body, _TITAN_KEYS)
    if "inputImage" in body and "inputText" not in body:
        return []
    require(body, "inputText")
    if not isinstance(body["inputText"], str):
        raise malformed("inputText: expected type: String")
    return [body["inputText"]]


def parse_request(body: Mapping[str, Any]) -> Prompt:
    """The billed input: every text's tokens (no chat framing for embeddings)."""
    texts = _texts(body)
    digest = hashlib.blake2b("\x00".join(texts).encode(), digest_size=16).digest()
    return Prompt(sum(text_tokens(text) for text in texts), digest, 1, ())


def _vector(model: str, text: str, size: int) -> list[float]:
    seed = hashlib.blake2b(f"{model}\x00{text}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(seed, "big"))
    values = [rng.gauss(0.0, 1.0) for _ in range(size)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [round(v / norm, 8) for v in values]


def _choice(value: Any, allowed: tuple[int, ...], name: str) -> int:
    if value not in allowed or isinstance(value, bool):
        raise ValidationException(f"{name} must be one of {', '.join(map(str, allowed))}.")
    return int(value)


def _titan(request: Mapping[str, Any], model: str, tokens: int) -> dict[str, Any]:
    text = request.get("inputText") or ""
    if "-v2" in model:
        vector = _vector(model, text, _choice(setting(request, "dimensions", 1024), _TITAN_V2_DIMENSIONS, "dimensions"))
        return {"embedding": vector, "embeddingsByType": {"float": vector}, "inputTextTokenCount": tokens}
    size = 1536
    if "image" in model:
        config = request.get("embeddingConfig")
        size = _choice(setting(config if isinstance(config, Mapping) else {}, "outputEmbeddingLength", 1024),
                       (256, 384, 1024), "outputEmbeddingLength")
    return {"embedding": _vector(model, text, size), "inputTextTokenCount": tokens}


def _cohere(request: Mapping[str, Any], model: str, request_id: str) -> dict[str, Any]:
    texts = _texts(request)
    if model.startswith("cohere.embed-v4"):
        size = _choice(setting(request, "output_dimension", 1536), _COHERE_V4_DIMENSIONS, "output_dimension")
        vectors = [_vector(model, text, size) for text in texts]
        return {"embeddings": {"float": vectors}, "id": request_id, "response_type": "embeddings_by_type",
                "texts": texts}
    require(request, "input_type")
    if request["input_type"] not in _COHERE_INPUT_TYPES:
        raise ValidationException(f"input_type must be one of {', '.join(_COHERE_INPUT_TYPES)}.")
    vectors = [_vector(model, text, 1024) for text in texts]
    if request.get("embedding_types"):
        return {"embeddings": {"float": vectors}, "id": request_id, "response_type": "embeddings_by_type",
                "texts": [text.lower() for text in texts]}
    return {"embeddings": vectors, "id": request_id, "response_type": "embeddings_floats",
            "texts": [text.lower() for text in texts]}


def embed(request: Mapping[str, Any], model: str, request_id: str) -> tuple[int, dict[str, Any]]:
    """(input tokens, response body) for one InvokeModel call."""
    if model.startswith("cohere.") and "texts" not in request:
        raise malformed("required key [texts] not found")
    if model.startswith("amazon.") and "texts" in request:
        raise malformed("extraneous key [texts] is not permitted")
    tokens = parse_request(request).tokens
    if model.startswith("cohere."):
        return tokens, _cohere(request, model, request_id)
    return tokens, _titan(request, model, tokens)
