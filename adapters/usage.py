"""Token usage as Bedrock bills it.

`input_tokens` never includes cached tokens: Bedrock reports uncached input,
cache reads and cache writes separately and prices them separately
(see BEDROCK_WIRE.md §3.4: `totalTokens = input + output + cacheRead + cacheWrite`).
The service tier and latency mode that served the tokens are part of how they
are billed, so they travel with them.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.slot_init import slot_init

__all__ = ["Usage"]


@slot_init  # a few per request (issue #20)
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

    def merged(
        self, *, input_tokens: int | None = None, output_tokens: int | None = None,
        cache_read_tokens: int | None = None, cache_write_tokens: int | None = None,
        speech_input_tokens: int | None = None, speech_output_tokens: int | None = None,
        estimated: bool | None = None, service_tier: str | None = None, latency: str | None = None,
    ) -> Usage:
        """A copy with the given fields replaced; `None` values are ignored.

        Spelled out rather than `dataclasses.replace`, which walks the fields' metadata
        and cost as much again as the copy; and with the fields as parameters, passed on
        by position, rather than gathered in a dict (issue #20: a Claude stream's
        `message_delta` merges once per stream, and the dict was half the merge)."""
        if (input_tokens is None and output_tokens is None and cache_read_tokens is None
                and cache_write_tokens is None and speech_input_tokens is None and speech_output_tokens is None
                and estimated is None and service_tier is None and latency is None):
            return self
        return Usage(
            self.input_tokens if input_tokens is None else input_tokens,
            self.output_tokens if output_tokens is None else output_tokens,
            self.cache_read_tokens if cache_read_tokens is None else cache_read_tokens,
            self.cache_write_tokens if cache_write_tokens is None else cache_write_tokens,
            self.speech_input_tokens if speech_input_tokens is None else speech_input_tokens,
            self.speech_output_tokens if speech_output_tokens is None else speech_output_tokens,
            self.estimated if estimated is None else estimated,
            self.service_tier if service_tier is None else service_tier,
            self.latency if latency is None else latency,
        )
