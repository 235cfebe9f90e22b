"""How many output tokens one response of a model can have (`model_limits` in config.yaml).

A request's max-tokens value beyond its model's limit is refused with a
`ValidationException` before admission: Bedrock would refuse it too, and the
quota must never reserve the cost of a billion output tokens the model cannot
produce (issue #17 item 3). The same limit bounds the worst case of a fallback
model that can produce fewer tokens than the one asked for.

Keyed by base model id: a profile (`us.…`, `global.…`) or an ARN of a model has
its base model's limit. A model the table does not list is bounded only by
`UNLISTED_MAX_OUTPUT_TOKENS`, far above any Bedrock model's limit (the largest
were 128K tokens in 2026-12): the proxy never refuses a value Bedrock might
accept for a model it does not know, and the worst case stays a finite number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from adapters.modelid import base_model_id

__all__ = ["ModelLimits", "UNLISTED_MAX_OUTPUT_TOKENS", "parse_model_limits"]

#: The bound for a model `model_limits` does not list (see the module docstring).
UNLISTED_MAX_OUTPUT_TOKENS = 1_000_000
_KEYS = frozenset({"max_output_tokens"})


@dataclass(frozen=True, slots=True)
class ModelLimits:
    #: Base model id → the most output tokens one response may have.
    max_output_tokens: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def listed_limit(self, model_id: str) -> int | None:
        """The output-token limit of `model_id` if the table lists its model, else None."""
        return self.max_output_tokens.get(base_model_id(model_id))

    def output_limit(self, model_id: str) -> int:
        """The output-token limit of `model_id` (any id form of the model), or the unlisted bound."""
        return self.max_output_tokens.get(base_model_id(model_id), UNLISTED_MAX_OUTPUT_TOKENS)

    def listed(self, model_id: str) -> bool:
        return base_model_id(model_id) in self.max_output_tokens


def parse_model_limits(raw: Any) -> ModelLimits:
    """`model_limits` from config.yaml: base model id → `{max_output_tokens: N}`.
    Raises ValueError naming the key."""
    if raw is None:
        return ModelLimits()
    if not isinstance(raw, Mapping):
        raise ValueError("model_limits: expected a mapping of base model id → {max_output_tokens: N}")
    limits: dict[str, int] = {}
    for model, spec in raw.items():
        key = f"model_limits.{model}"
        if base_model_id(str(model)) != str(model):
            raise ValueError(f"{key}: expected a base model id (no profile prefix, no ARN)")
        if not isinstance(spec, Mapping) or set(spec) != _KEYS:
            raise ValueError(f"{key}: expected {{max_output_tokens: N}}")
        value = spec["max_output_tokens"]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= UNLISTED_MAX_OUTPUT_TOKENS:
            raise ValueError(f"{key}.max_output_tokens: expected an integer from 1 to "
                             f"{UNLISTED_MAX_OUTPUT_TOKENS}, got {value!r}")
        limits[str(model)] = value
    return ModelLimits(MappingProxyType(limits))
