"""Where each family keeps its max-output-tokens setting, to read and clamp it.

A per-app cap (`max_output_tokens`) is enforced by rewriting the request body:
the value is lowered to the cap, or set to the cap when the request left it to
the model's (possibly much larger) default. The same value bounds the
worst-case cost the quota reserves.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

__all__ = ["max_output_tokens", "clamp_max_output_tokens"]

#: family (or "converse") → key paths; the first is the one written when absent.
_PATHS: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "converse": (("inferenceConfig", "maxTokens"),),
    "anthropic": (("max_tokens",), ("max_tokens_to_sample",)),
    "nova": (("inferenceConfig", "maxTokens"), ("inferenceConfig", "max_new_tokens")),
    "llama": (("max_gen_len",),),
    "titan": (("textGenerationConfig", "maxTokenCount"),),
    "mistral": (("max_tokens",),),
    "cohere": (("max_tokens",),),
    "ai21": (("max_tokens",),),
    "deepseek": (("max_tokens",),),
    "openai": (("max_completion_tokens",), ("max_tokens",)),
    "generic": (("max_tokens",),),
}


def _paths(family: str) -> tuple[tuple[str, ...], ...]:
    return _PATHS.get(family, _PATHS["generic"])


def _get(document: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = document
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def max_output_tokens(family: str, document: Mapping[str, Any]) -> int | None:
    """The request's own max-output-tokens, if it sets one."""
    for path in _paths(family):
        value = _get(document, path)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def clamp_max_output_tokens(family: str, document: MutableMapping[str, Any], cap: int) -> bool:
    """Lower (or set) the max-output-tokens to `cap`; True when `document` changed."""
    changed = False
    found = False
    for path in _paths(family):
        value = _get(document, path)
        if isinstance(value, int) and not isinstance(value, bool):
            found = True
            if value > cap:
                _set(document, path, cap)
                changed = True
    if not found:
        _set(document, _paths(family)[0], cap)
        changed = True
    return changed


def _set(document: MutableMapping[str, Any], path: tuple[str, ...], value: int) -> None:
    node = document
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, MutableMapping):
            child = node[key] = {}
        node = child
    node[path[-1]] = value
