"""Token usage as Bedrock bills it.

`input_tokens` never includes cached tokens: Bedrock reports uncached input,
cache reads and cache writes separately and prices them separately
(see BEDROCK_WIRE.md §3.4: `totalTokens = input + output + cacheRead + cacheWrite`).
The service tier and latency mode that served the tokens are part of how they
are billed, so they travel with them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

__all__ = ["Usage"]


@dataclass(frozen=True, slots=True, init=False)
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

    def __init__(
        self, input_tokens: int = 0, output_tokens: int = 0, cache_read_tokens: int = 0,
        cache_write_tokens: int = 0, speech_input_tokens: int = 0, speech_output_tokens: int = 0,
        estimated: bool = False, service_tier: str | None = None, latency: str | None = None,
    ) -> None:
        """The dataclass's own `__init__`, each field set through its slot's setter bound
        once (`_SETTERS`) rather than `object.__setattr__` looked up per field: a frozen
        dataclass's generated one cost twice as much, and a request makes a few (issue #20).
        tests/adapters/test_properties_usage.py holds it to the fields, in their order."""
        set_input, set_output, set_cache_read, set_cache_write, set_speech_input, set_speech_output, \
            set_estimated, set_tier, set_latency = _SETTERS
        set_input(self, input_tokens)
        set_output(self, output_tokens)
        set_cache_read(self, cache_read_tokens)
        set_cache_write(self, cache_write_tokens)
        set_speech_input(self, speech_input_tokens)
        set_speech_output(self, speech_output_tokens)
        set_estimated(self, estimated)
        set_tier(self, service_tier)
        set_latency(self, latency)

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


#: Each field's slot setter, in the fields' order (what `Usage.__init__` sets them with).
_SETTERS: tuple[Any, ...] = tuple(Usage.__dict__[field.name].__set__ for field in fields(Usage))
