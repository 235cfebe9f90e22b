"""Which native-body module speaks for a base model id (InvokeModel, its stream, CountTokens).

Every text family exposes `parse_request(body) -> Prompt`,
`response_body(completion, request, model, request_id)` and
`stream_events(completion, request, model, request_id)`; embedding models go
to `embeddings`, which cannot stream. Converse does not need a family: it works
for any model id.
"""

from __future__ import annotations

from types import ModuleType

from simulator import (
    ai21,
    anthropic,
    cohere,
    deepseek,
    embeddings,
    llama,
    mistral,
    nova,
    openai,
    titan,
)

__all__ = ["family_of", "caches_prompts"]

_PREFIXES: tuple[tuple[str, ModuleType], ...] = (
    ("anthropic.claude", anthropic),
    ("amazon.nova-", nova),
    ("amazon.titan-text-", titan),
    ("amazon.titan-tg1-", titan),
    ("amazon.titan-embed-", embeddings),
    ("cohere.embed-", embeddings),
    ("cohere.command", cohere),
    ("meta.llama", llama),
    ("mistral.", mistral),
    ("ai21.jamba", ai21),
    ("deepseek.", deepseek),
    ("openai.gpt-oss-", openai),
)
#: Nova models that are not text-in/text-out (image, video, speech, embeddings).
_NOVA_OTHER = ("amazon.nova-canvas", "amazon.nova-reel", "amazon.nova-sonic", "amazon.nova-2-sonic",
               "amazon.nova-2-multimodal-embeddings")
#: Families with prompt caching: only their responses carry cache counts
#: (headers, invocation metrics); Titan, Llama, Cohere recordings have none.
_CACHING = (anthropic, nova)


def family_of(base_model: str | None) -> ModuleType | None:
    if not base_model or base_model.startswith(_NOVA_OTHER):
        return None
    for prefix, module in _PREFIXES:
        if base_model.startswith(prefix):
            return module
    return None


def caches_prompts(family: ModuleType) -> bool:
    return family in _CACHING
