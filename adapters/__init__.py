"""Per-family readers of Bedrock responses. Pure: bytes and dicts in, `Usage` out.

Every family module exposes the same interface:

* `MODEL_PREFIXES` — base-model-id prefixes it owns (`"anthropic."`);
* `usage_from_body(body) -> Usage | None` — a non-streamed InvokeModel body;
* `usage_from_chunk(chunk, usage) -> Usage | None` — one decoded stream chunk,
  returning the usage accumulated so far;
* `output_text(chunk) -> str` — generated text in a chunk, for estimates.

Adding a family is one module plus one line in `FAMILIES`.
"""

from __future__ import annotations

from types import ModuleType

from adapters import ai21, anthropic, cohere, deepseek, generic, llama, mistral, nova, openai, titan
from adapters.modelid import base_model_id

__all__ = ["FAMILIES", "family_of"]

FAMILIES: dict[str, ModuleType] = {
    "anthropic": anthropic,
    "nova": nova,
    "llama": llama,
    "titan": titan,
    "mistral": mistral,
    "cohere": cohere,
    "ai21": ai21,
    "deepseek": deepseek,
    "openai": openai,
    "generic": generic,
}


def family_of(model_id: str) -> str:
    """The family owning the longest matching prefix of the base model id, else `generic`.

    ARNs that name no model (application inference profiles, provisioned
    models) are `generic`: Bedrock's own headers and metrics still meter them.
    """
    base = base_model_id(model_id)
    best, best_length = "generic", 0
    for name, module in FAMILIES.items():
        for prefix in module.MODEL_PREFIXES:
            if len(prefix) > best_length and base.startswith(prefix):
                best, best_length = name, len(prefix)
    return best
