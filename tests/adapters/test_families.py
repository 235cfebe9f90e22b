from __future__ import annotations

import pytest

from adapters import FAMILIES, family_of


@pytest.mark.parametrize(
    ("model_id", "family"),
    [
        ("anthropic.claude-3-sonnet-20240229-v1:0", "anthropic"),
        ("anthropic.claude-instant-v1", "anthropic"),
        ("us.anthropic.claude-3-7-sonnet-20250219-v1:0", "anthropic"),
        ("eu.anthropic.claude-haiku-4-5-20251001-v1:0", "anthropic"),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic"),
        ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic"),
        ("amazon.nova-lite-v1:0", "nova"),
        ("us.amazon.nova-micro-v1:0", "nova"),
        ("amazon.nova-2-lite-v1:0", "nova"),
        ("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0", "nova"),
        ("amazon.titan-text-express-v1", "titan"),
        ("arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-tg1-large", "titan"),
        ("amazon.titan-embed-text-v2:0", "titan"),
        ("meta.llama3-70b-instruct-v1:0", "llama"),
        ("cohere.command-text-v14", "cohere"),
        ("cohere.command-r-plus-v1:0", "cohere"),
        ("cohere.embed-v4:0", "cohere"),
        ("us.mistral.pixtral-large-2502-v1:0", "mistral"),
        ("mistral.mistral-7b-instruct-v0:2", "mistral"),
        ("ai21.jamba-1-5-mini-v1:0", "ai21"),
        ("us.deepseek.r1-v1:0", "deepseek"),
        ("openai.gpt-oss-20b-1:0", "openai"),
        ("amazon.titan-image-generator-v2:0", "generic"),
        ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123", "generic"),
        ("", "generic"),
    ],
)
def test_family_of(model_id: str, family: str) -> None:
    assert family_of(model_id) == family


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_has_the_same_interface(name: str) -> None:
    module = FAMILIES[name]
    assert isinstance(module.MODEL_PREFIXES, tuple)
    for function in ("usage_from_body", "usage_from_chunk", "output_text"):
        assert callable(getattr(module, function)), f"{name}.{function}"
    assert module.usage_from_body({}) is None
    assert module.usage_from_chunk({}, None) is None
    assert module.output_text({}) == ""
