"""Token usage as Bedrock bills it.

`input_tokens` never includes cached tokens: Bedrock reports uncached input,
cache reads and cache writes separately and prices them separately
(see BEDROCK_WIRE.md §3.4: `totalTokens = input + output + cacheRead + cacheWrite`).
The service tier and latency mode that served the tokens are part of how they
are billed, so they travel with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    #: Of `input_tokens` and `output_tokens`, the speech (audio) tokens: a speech-to-speech
    #: model (Nova Sonic, adapters/bidi.py) bills them at their own rates (metering/pricing.py).
    speech_input_tokens: int = 0
    speech_output_tokens: int = 0
    #: True when Bedrock reported no number and the proxy had to estimate.
    estimated: bool = False
    #: The service tier that served the request ("" standard, "priority", "flex" …) and its
    #: latency mode ("" standard, "optimized"), as Bedrock said; None: not said (adapters/tiers.py).
    service_tier: str | None = None
    latency: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def merged(self, **fields: Any) -> Usage:
        """A copy with the given fields replaced; `None` values are ignored.

        Spelled out rather than `dataclasses.replace`, which walks the fields' metadata
        and cost as much again as the copy (it runs once or twice per metered request)."""
        given = {k: v for k, v in fields.items() if v is not None}
        if not given:
            return self
        values: dict[str, Any] = {
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens, "cache_write_tokens": self.cache_write_tokens,
            "speech_input_tokens": self.speech_input_tokens, "speech_output_tokens": self.speech_output_tokens,
            "estimated": self.estimated, "service_tier": self.service_tier, "latency": self.latency,
        }
        values.update(given)
        return Usage(**values)
