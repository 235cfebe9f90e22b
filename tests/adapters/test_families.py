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
        ("amazon.titan-text-express-v1", "generic"),
        ("arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-tg1-large", "generic"),
        ("meta.llama3-70b-instruct-v1:0", "generic"),
        ("cohere.command-text-v14", "generic"),
        ("us.mistral.pixtral-large-2502-v1:0", "generic"),
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
