"""Models Bedrock serves only through inference profiles, and the profile scopes each has.

Bedrock refuses a base model id, or a foundation-model ARN, of many current
models on on-demand throughput: HTTP 400 `ValidationException`, "Invocation of
model ID … with on-demand throughput isn’t supported. Retry your request with
the ID or ARN of an inference profile that contains this model." (BEDROCK_WIRE.md
§1.2; public issue threads show it for Claude 3.5 Sonnet v2, 3.7 Sonnet and every
later Claude, Nova Premier, Nova 2, Llama 3.2/3.3/4 and DeepSeek R1). A proxy that
rewrites model ids has to keep the client's profile, so the simulator refuses the
same ids as Bedrock does; otherwise a test of that rewriting passes against the
simulator and fails against Bedrock.

    refusal(model_id) -> ValidationException | None
      bare id / foundation-model ARN of a profile-only model → on-demand refusal
      profile (id or ARN) in a scope the model has no profile in → invalid identifier
      anything else (on-demand models, unknown models, other ARNs) → None

The table is data, compiled 2026-12-05 from BEDROCK_WIRE.md §1.2, the public
issue threads quoting the refusal, and a client's per-model profile table
(zed-industries/zed `crates/bedrock/src/models.rs`, `cross_region_inference_id`).
Which models need a profile changes over time and by region; rows are ordered,
the first matching pattern wins, and a family row with every scope (`ANY_SCOPE`)
stands for later models whose scopes are not tabled yet: their bare id is
refused, any profile accepted. A geo profile must be called from a source
Region of its geography (`eu.` from eu-*, `jp.` from Tokyo or Osaka): from
elsewhere the profile does not exist there, and Bedrock answers "The provided
model identifier is invalid." (`source_region_allows`; `global.` from any
commercial Region).

Deliberately on demand (not in the table): Claude 3 Haiku, Claude 3.5 Haiku,
Claude 3.5 Sonnet v1, Nova Micro/Lite/Pro (they also have profiles), Nova 2
Sonic (bidirectional only) and Nova 2 Multimodal Embeddings, DeepSeek V3.x
(served in-Region), Llama 3/3.1.

CountTokens is not checked: its `modelId` is a base model id and clients strip
the geo prefix before calling it (BEDROCK_WIRE.md §1 notes).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from proxy.errors import ValidationException

__all__ = [
    "SCOPES",
    "ANY_SCOPE",
    "PROFILE_ONLY",
    "CHECKED_OPERATIONS",
    "ProfileOnly",
    "ModelRef",
    "INVALID_MODEL",
    "on_demand_message",
    "profile_only",
    "parse",
    "refusal",
]

#: Prefixes of system-defined (cross-Region) inference profiles: geographies and `global`.
SCOPES: tuple[str, ...] = ("us", "eu", "apac", "jp", "au", "ca", "us-gov", "global")
ANY_SCOPE = frozenset(SCOPES)
#: The operations that invoke a model. CountTokens takes base ids; async jobs name
#: the model in the body (Nova Reel), not the path.
CHECKED_OPERATIONS = frozenset({"InvokeModel", "InvokeModelWithResponseStream", "Converse", "ConverseStream"})
INVALID_MODEL = "The provided model identifier is invalid."
_ON_DEMAND = ("Invocation of model ID {model} with on-demand throughput isn\u2019t supported. "
              "Retry your request with the ID or ARN of an inference profile that contains this model.")


@dataclass(frozen=True, slots=True)
class ProfileOnly:
    """A row of the table: base model ids matching `pattern` (fnmatch, case-sensitive
    like Bedrock's ids) have system-defined profiles in `scopes` and no on-demand route."""

    pattern: str
    scopes: frozenset[str]


def _row(pattern: str, scopes: str) -> ProfileOnly:
    names = frozenset(scopes.split())
    unknown = names - ANY_SCOPE
    if unknown:
        raise ValueError(f"{pattern}: unknown profile scopes {sorted(unknown)}")
    return ProfileOnly(pattern, names)


_ALL = " ".join(SCOPES)

#: Ordered: specific models first, then a family row for its later models.
PROFILE_ONLY: tuple[ProfileOnly, ...] = (
    _row("anthropic.claude-3-5-sonnet-20241022-v2:0", "us apac"),
    _row("anthropic.claude-3-7-sonnet-*", "us eu apac"),
    _row("anthropic.claude-sonnet-4-20250514-*", "us eu apac global"),
    _row("anthropic.claude-sonnet-4-5-*", "us eu apac jp au us-gov global"),
    _row("anthropic.claude-sonnet-4-6*", "us eu jp au global"),
    _row("anthropic.claude-sonnet-4*", _ALL),
    _row("anthropic.claude-opus-4-20250514-*", "us"),
    _row("anthropic.claude-opus-4-1-*", "us"),
    _row("anthropic.claude-opus-4-5-*", "us eu global"),
    _row("anthropic.claude-opus-4-6*", "us eu au global"),
    _row("anthropic.claude-opus-4*", _ALL),
    _row("anthropic.claude-haiku-4-5*", "us eu apac jp au global"),
    _row("amazon.nova-premier-*", "us"),
    _row("amazon.nova-2-lite-*", "us eu apac jp global"),
    _row("amazon.nova-2-pro-*", _ALL),
    _row("meta.llama3-2-1b-*", "us eu"),
    _row("meta.llama3-2-3b-*", "us eu"),
    _row("meta.llama3-2-*", "us"),
    _row("meta.llama3-3-*", "us"),
    _row("meta.llama4-*", "us"),
    _row("deepseek.r1-*", "us"),
)

Kind = Literal["base", "foundation-model", "profile", "other"]


@dataclass(frozen=True, slots=True)
class ModelRef:
    """What a path's model id names: its kind, the profile scope if any, the base model."""

    kind: Kind
    base: str
    scope: str | None = None


def on_demand_message(model: str) -> str:
    return _ON_DEMAND.format(model=model)


def profile_only(base_model: str) -> ProfileOnly | None:
    """The first table row matching `base_model`, or None when it is served on demand."""
    for row in PROFILE_ONLY:
        if fnmatchcase(base_model, row.pattern):
            return row
    return None


def parse(model_id: str) -> ModelRef:
    """Split a decoded model id (BEDROCK_WIRE.md §1.2 forms) into kind, scope and base.

    Other ARNs (application-inference-profile, provisioned-model, custom, imported,
    prompt, SageMaker) name no base model here and come back as kind "other".
    """
    if model_id.startswith("arn:"):
        kind, _, rest = model_id.split(":", 5)[-1].partition("/")
        if kind == "foundation-model" and rest:
            return ModelRef("foundation-model", rest)
        if kind == "inference-profile" and rest:
            scope, base = _split_scope(rest)
            return ModelRef("profile", base, scope)
        return ModelRef("other", model_id)
    scope, base = _split_scope(model_id)
    return ModelRef("base" if scope is None else "profile", base, scope)


def _split_scope(model_id: str) -> tuple[str | None, str]:
    head, dot, rest = model_id.partition(".")
    if dot and rest and head in ANY_SCOPE:
        return head, rest
    return None, model_id


#: Source Regions from which each geo scope's profiles can be called (prefix match).
_SOURCE_REGIONS: dict[str, tuple[str, ...]] = {
    "us": ("us-east-", "us-west-"),
    "us-gov": ("us-gov-",),
    "eu": ("eu-",),
    "apac": ("ap-",),
    "jp": ("ap-northeast-1", "ap-northeast-3"),
    "au": ("ap-southeast-2", "ap-southeast-4"),
    "ca": ("ca-",),
}


def source_region_allows(scope: str, region: str) -> bool:
    """Whether a `scope.` profile can be called from `region` (a geo profile only from its
    own geography; `global.` from any commercial Region, not GovCloud or China)."""
    if scope == "global":
        return not region.startswith(("us-gov-", "cn-"))
    return region.startswith(_SOURCE_REGIONS.get(scope, ()))


def refusal(model_id: str, region: str | None = None) -> ValidationException | None:
    """Bedrock's 400 for invoking `model_id` (decoded, as the client sent it), or None.

    The on-demand message names the base model id: for a foundation-model ARN that is
    the id inside the ARN — the form the public reports show (issue threads quote the
    bare id only), and the id a client needs to build the profile id it should retry with.
    """
    ref = parse(model_id)
    if ref.kind == "other":
        return None
    if ref.scope is not None and region is not None and not source_region_allows(ref.scope, region):
        return ValidationException(INVALID_MODEL)
    row = profile_only(ref.base)
    if row is None:
        return None
    if ref.kind in ("base", "foundation-model"):
        return ValidationException(on_demand_message(ref.base))
    if ref.scope not in row.scopes:
        return ValidationException(INVALID_MODEL)
    return None
