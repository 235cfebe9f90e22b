"""Model ids for the profile-only tests (simulator/profiles.py), written out rather than
derived from the table, so a row lost or reordered by mistake shows as a failure."""

from __future__ import annotations

from typing import Any

#: One current id per profile-only family (BEDROCK_WIRE.md §1.2), with its body family.
PROFILE_ONLY_MODELS: dict[str, str] = {
    "claude-3-5-sonnet-v2": "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "claude-3-7-sonnet": "anthropic.claude-3-7-sonnet-20250219-v1:0",
    "claude-sonnet-4": "anthropic.claude-sonnet-4-20250514-v1:0",
    "claude-sonnet-4-5": "anthropic.claude-sonnet-4-5-20250929-v1:0",
    "claude-sonnet-4-6": "anthropic.claude-sonnet-4-6",
    "claude-opus-4": "anthropic.claude-opus-4-20250514-v1:0",
    "claude-opus-4-1": "anthropic.claude-opus-4-1-20250805-v1:0",
    "claude-opus-4-5": "anthropic.claude-opus-4-5-20251101-v1:0",
    "claude-opus-4-6": "anthropic.claude-opus-4-6-v1",
    "claude-haiku-4-5": "anthropic.claude-haiku-4-5-20251001-v1:0",
    "nova-premier": "amazon.nova-premier-v1:0",
    "nova-2-lite": "amazon.nova-2-lite-v1:0",
    "llama-3-2-1b": "meta.llama3-2-1b-instruct-v1:0",
    "llama-3-2-90b": "meta.llama3-2-90b-instruct-v1:0",
    "llama-3-3-70b": "meta.llama3-3-70b-instruct-v1:0",
    "llama-4-scout": "meta.llama4-scout-17b-instruct-v1:0",
    "llama-4-maverick": "meta.llama4-maverick-17b-instruct-v1:0",
    "deepseek-r1": "deepseek.r1-v1:0",
}

#: Models Bedrock still serves on demand: their bare ids must keep answering.
ON_DEMAND_MODELS: tuple[str, ...] = (
    "amazon.nova-micro-v1:0",
    "amazon.nova-lite-v1:0",
    "amazon.nova-pro-v1:0",
    "anthropic.claude-3-haiku-20240307-v1:0",
    "anthropic.claude-3-5-haiku-20241022-v1:0",
    "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "meta.llama3-70b-instruct-v1:0",
    "meta.llama3-1-70b-instruct-v1:0",
    "mistral.mistral-large-2407-v1:0",
    "deepseek.v3-v1:0",
)

#: (profile id, has a profile in that scope) — scopes from the table's sources.
SCOPED_PROFILES: tuple[tuple[str, bool], ...] = (
    ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", True),
    ("us-gov.anthropic.claude-sonnet-4-5-20250929-v1:0", True),
    ("jp.anthropic.claude-haiku-4-5-20251001-v1:0", True),
    ("au.anthropic.claude-opus-4-6-v1", True),
    ("apac.anthropic.claude-3-7-sonnet-20250219-v1:0", True),
    ("eu.meta.llama3-2-1b-instruct-v1:0", True),
    ("global.amazon.nova-2-lite-v1:0", True),
    ("ca.anthropic.claude-sonnet-4-5-20250929-v1:0", False),
    ("us-gov.anthropic.claude-haiku-4-5-20251001-v1:0", False),
    ("global.anthropic.claude-opus-4-1-20250805-v1:0", False),
    ("eu.anthropic.claude-opus-4-20250514-v1:0", False),
    ("global.amazon.nova-premier-v1:0", False),
    ("eu.meta.llama3-3-70b-instruct-v1:0", False),
    ("eu.meta.llama3-2-90b-instruct-v1:0", False),
    ("apac.meta.llama4-scout-17b-instruct-v1:0", False),
    ("eu.deepseek.r1-v1:0", False),
)

ON_DEMAND_REFUSAL = ("Invocation of model ID {model} with on-demand throughput isn\u2019t supported. "
                     "Retry your request with the ID or ARN of an inference profile that contains this model.")
INVALID_MODEL = "The provided model identifier is invalid."
ERROR_TYPE = "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"


def foundation_model_arn(model: str, region: str = "us-east-1") -> str:
    """The ARN `list-foundation-models` gives (its account field is empty)."""
    return f"arn:aws:bedrock:{region}::foundation-model/{model}"


def converse_request(prompt: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"text": prompt}]}], "inferenceConfig": {"maxTokens": 50}}


def native_request(model: str, prompt: str) -> dict[str, Any]:
    """An InvokeModel body the simulator accepts for `model`'s family."""
    if model.startswith("anthropic."):
        return {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
                "messages": [{"role": "user", "content": prompt}]}
    if model.startswith("amazon.nova"):
        return {"messages": [{"role": "user", "content": [{"text": prompt}]}], "inferenceConfig": {"maxTokens": 50}}
    if model.startswith("meta."):
        return {"prompt": prompt, "max_gen_len": 50}
    if model.startswith("deepseek."):
        return {"prompt": prompt, "max_tokens": 50}
    if model.startswith("mistral."):
        return {"prompt": f"<s>[INST] {prompt} [/INST]", "max_tokens": 50}
    raise ValueError(f"no native body for {model}")
