"""Where each family keeps its max-output-tokens setting, to read and clamp it.

A per-app cap (`max_output_tokens`) is enforced by rewriting the request body:
the value is lowered to the cap, or set to the cap when the request left it to
the model's (possibly much larger) default. The same value bounds the
worst-case cost the quota reserves.

Before either, `checked_max_output_tokens` refuses a value that is not an integer
from 0 to the model's limit (`MaxTokensError`, naming the field): a negative,
fractional, string or boolean value, or one beyond what the model can produce.
`NaN`, `Infinity`, `1e400` and integers too long to convert never get this far
(proxy/strict_json.py refuses them while parsing).
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, MutableMapping
from typing import Any

__all__ = [
    "MaxTokensError", "checked_max_output_tokens", "clamp_max_output_tokens", "max_output_tokens",
    "max_tokens_fields",
]

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


def max_tokens_fields(family: str) -> tuple[tuple[str, ...], ...]:
    """The key paths where `family` (or "converse") keeps its max-output-tokens."""
    return _paths(family)


def _get(document: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value = _present(document, path)
    return None if value is _MISSING else value


class MaxTokensError(ValueError):
    """A max-tokens value Bedrock would refuse; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


_MISSING = object()
#: Renders a refused value in a message, cut short: the client chose it.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 40, 40


def checked_max_output_tokens(family: str, document: Mapping[str, Any], limit: int) -> int | None:
    """The request's own max-output-tokens after checking every field the family
    reads: each must be an integer from 0 to `limit`. An absent or `null` field is
    left to the model's default. Raises `MaxTokensError` naming the field.

    One walk of the paths (it runs on every request, issue #20): the answer is what
    `max_output_tokens` gives, the first positive value, once every field has passed."""
    asked = None
    for path in _paths(family):
        value = _present(document, path)
        if value is _MISSING or value is None:
            continue
        if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)) or value < 0:
            raise MaxTokensError(".".join(path), f"expected a non-negative integer, got {_shown(value)}")
        if value > limit:
            raise MaxTokensError(".".join(path), f"{_shown(value)} exceeds the model's limit of {limit} output "
                                                 f"tokens; try again with {limit} or less")
        if asked is None and value > 0:
            asked = value
    return asked


def _shown(value: Any) -> str:
    """A short rendering of a client's value: never the whole of a huge one."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"a {len(str(value))}-digit integer"  # below the interpreter's conversion limit here
    return _REPR.repr(value)


def _present(document: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at `path`, `_MISSING` when a step is absent or not an object."""
    node: Any = document
    for key in path:
        # `dict` first: the ABC's check is several times slower, and this runs a few times
        # per request (issue #20).
        if not (type(node) is dict or isinstance(node, Mapping)) or key not in node:
            return _MISSING
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
