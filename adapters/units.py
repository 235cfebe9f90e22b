"""Work Bedrock bills in units other than tokens, read from request and response bodies.

An async video job (StartAsyncInvoke, Nova Reel, Luma Ray) is billed per second of
video, an image job per image, ApplyGuardrail per 1,000 text units of each policy it
ran plus per image its content filter checked. The request says how much a job will
bill before it runs (so a quota can admit it by its cost); ApplyGuardrail's response
says what it billed (`usage`). Pure: dicts in, `Units` out; `metering/unit_prices.py`
prices them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["GUARDRAIL_POLICIES", "Units", "guardrail_units", "job_units"]

#: Guardrail policy → its `usage` field in the ApplyGuardrail response (botocore
#: `GuardrailUsage`). `sensitiveInformationPolicyFreeUnits` (regex filters) is free
#: and never counted.
GUARDRAIL_POLICIES: Mapping[str, str] = MappingProxyType({
    "topic": "topicPolicyUnits",
    "content": "contentPolicyUnits",
    "word": "wordPolicyUnits",
    "sensitive_information": "sensitiveInformationPolicyUnits",
    "contextual_grounding": "contextualGroundingPolicyUnits",
    "automated_reasoning": "automatedReasoningPolicyUnits",
})
#: Nova Reel's multi-shot manual mode renders every shot 6 seconds long (Nova user
#: guide, "Video generation access and usage", 2025-04).
_SHOT_SECONDS = 6
#: Nova Canvas / Titan Image task types; each makes `numberOfImages` images (default 1).
_IMAGE_TASKS = frozenset({
    "TEXT_IMAGE", "IMAGE_VARIATION", "INPAINTING", "OUTPAINTING", "COLOR_GUIDED_GENERATION",
    "BACKGROUND_REMOVAL", "VIRTUAL_TRY_ON",
})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*s\s*$")


@dataclass(frozen=True, slots=True)
class Units:
    """What one request bills that is not tokens. None: the request does not say."""

    #: Seconds of video.
    seconds: float | None = None
    #: Images generated (a job) or checked (a guardrail's image content filter).
    images: int | None = None
    #: Guardrail policy (`GUARDRAIL_POLICIES`) → text units it processed.
    text_units: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def amounts(self) -> dict[str, float]:
        """Every unit the request reports, by the name its price goes by:
        `second`, `image`, and `text:<policy>` (zeros included)."""
        reported: dict[str, float] = {f"text:{policy}": units for policy, units in self.text_units.items()}
        if self.seconds is not None:
            reported["second"] = self.seconds
        if self.images is not None:
            reported["image"] = self.images
        return reported


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)


def job_units(model_input: Any) -> Units:
    """The units a StartAsyncInvoke `modelInput` asks for, as far as it says.

    Video: Nova Reel's `videoGenerationConfig.durationSeconds`, or 6 s per shot of a
    `MULTI_SHOT_MANUAL` job; Luma Ray's `duration` (`"5s"`). Images: Nova Canvas /
    Titan Image `imageGenerationConfig.numberOfImages` (default 1) for an image task.
    """
    if not isinstance(model_input, Mapping):
        return Units()
    seconds: float | None = None
    video = model_input.get("videoGenerationConfig")
    if isinstance(video, Mapping):
        seconds = _number(video.get("durationSeconds"))
    if seconds is None:
        manual = model_input.get("multiShotManualParams")
        shots = manual.get("shots") if isinstance(manual, Mapping) else None
        if isinstance(shots, list) and shots:
            seconds = float(_SHOT_SECONDS * len(shots))
    if seconds is None:
        duration = model_input.get("duration")
        if isinstance(duration, str) and (match := _DURATION.match(duration)):
            seconds = float(match.group(1))
        else:
            seconds = _number(duration)
    images: int | None = None
    if model_input.get("taskType") in _IMAGE_TASKS:
        config = model_input.get("imageGenerationConfig")
        count = config.get("numberOfImages", 1) if isinstance(config, Mapping) else 1
        images = count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None
    return Units(seconds=seconds, images=images)


def guardrail_units(response: Any) -> Units:
    """The units an ApplyGuardrail response's `usage` reports (empty if it has none)."""
    usage = response.get("usage") if isinstance(response, Mapping) else None
    if not isinstance(usage, Mapping):
        return Units()
    text_units = {}
    for policy, name in GUARDRAIL_POLICIES.items():
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            text_units[policy] = value
    images = usage.get("contentPolicyImageUnits")
    valid_images = isinstance(images, int) and not isinstance(images, bool) and images >= 0
    return Units(images=images if valid_images else None, text_units=MappingProxyType(text_units))
