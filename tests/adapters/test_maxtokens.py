from __future__ import annotations

from typing import Any

import pytest

from adapters.maxtokens import clamp_max_output_tokens, max_output_tokens


@pytest.mark.parametrize(
    ("family", "document", "expected"),
    [
        ("anthropic", {"max_tokens": 8000}, {"max_tokens": 512}),
        ("anthropic", {"max_tokens": 100}, {"max_tokens": 100}),
        ("anthropic", {}, {"max_tokens": 512}),
        ("nova", {"inferenceConfig": {"maxTokens": 4000, "temperature": 0.2}},
         {"inferenceConfig": {"maxTokens": 512, "temperature": 0.2}}),
        ("nova", {"messages": []}, {"messages": [], "inferenceConfig": {"maxTokens": 512}}),
        ("converse", {"inferenceConfig": {"maxTokens": 9999}}, {"inferenceConfig": {"maxTokens": 512}}),
        ("llama", {"max_gen_len": 2048}, {"max_gen_len": 512}),
        ("titan", {"textGenerationConfig": {"maxTokenCount": 3000}}, {"textGenerationConfig": {"maxTokenCount": 512}}),
        ("openai", {"max_completion_tokens": 1000, "max_tokens": 900}, {"max_completion_tokens": 512, "max_tokens": 512}),
        ("unknown-family", {"max_tokens": 600}, {"max_tokens": 512}),
    ],
)
def test_clamp(family: str, document: dict[str, Any], expected: dict[str, Any]) -> None:
    changed = clamp_max_output_tokens(family, document, 512)
    assert document == expected
    assert changed == (expected != {} and document != {"max_tokens": 100})
    assert max_output_tokens(family, document) == min(512, max_output_tokens(family, expected) or 512)
