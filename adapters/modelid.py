"""Model identity: from whatever a client puts in the path to the base model.

A client may name a base model (`amazon.nova-lite-v1:0`), a geo or global
inference profile (`us.anthropic.claude-…`, `global.…`) or an ARN
(foundation-model, inference-profile, application-inference-profile, …).
Family follows the base model. Forms: BEDROCK_WIRE.md §1.2.

A profile's prefix is its *routing scope*: `us.` routes inside the US, `eu.`
inside the EU, `global.` anywhere. Bedrock serves many current models only
through profiles, and a geo profile is also a data-residency promise, so a
fallback must keep the scope the client chose (`in_scope`): `us.` X falls back
to `us.` Y, never to a bare Y or to `eu.` Y.
"""

from __future__ import annotations

import re
from urllib.parse import quote

__all__ = [
    "GEO_SCOPES",
    "IN_REGION",
    "MAX_MODEL_ID_LENGTH",
    "SCOPES",
    "base_model_id",
    "encode_model_id",
    "in_scope",
    "is_valid_model_id",
    "price_id",
    "routing_scope",
]

MAX_MODEL_ID_LENGTH = 2048
#: Model ids, profile ids and ARNs only ever use these characters.
_VALID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/+\-]*$")
#: Geography scopes of cross-Region inference profiles (`us-gov` before `us`: longest prefix first).
GEO_SCOPES = ("us-gov", "us", "eu", "apac", "jp", "au", "ca")
#: Every profile scope; `global` routes to any commercial Region.
SCOPES = (*GEO_SCOPES, "global")
#: The scope of a bare model id (or foundation-model ARN): the caller's own Region, no profile.
IN_REGION = "in_region"
_GEO_PREFIXES = tuple(f"{scope}." for scope in SCOPES)


def is_valid_model_id(model_id: str) -> bool:
    return 0 < len(model_id) <= MAX_MODEL_ID_LENGTH and _VALID.match(model_id) is not None and ".." not in model_id


def base_model_id(model_id: str) -> str:
    """`arn:…:inference-profile/us.anthropic.x-v1:0` → `anthropic.x-v1:0`.

    Application-inference-profile and provisioned-model ARNs name no model; they
    are returned unchanged (their family comes from the response or the config).
    """
    if model_id.startswith("arn:"):
        resource = model_id.split(":", 5)[-1]
        kind, _, rest = resource.partition("/")
        if kind in ("foundation-model", "inference-profile") and rest:
            model_id = rest
        else:
            return model_id
    if not model_id.startswith(_GEO_PREFIXES):  # one C call for the usual bare id
        return model_id
    for prefix in _GEO_PREFIXES:
        if model_id.startswith(prefix) and len(model_id) > len(prefix):
            return model_id[len(prefix):]
    return model_id


def encode_model_id(model_id: str) -> str:
    """Encode a model id for the path the way botocore does (safe chars `-_.~` only)."""
    return quote(model_id, safe="-_.~")


def routing_scope(model_id: str) -> str | None:
    """`us` for `us.x` or an inference-profile ARN of `us.x`; None for a bare id, a
    foundation-model ARN, or an ARN that names no model (application profiles …)."""
    if model_id.startswith("arn:"):
        kind, _, rest = model_id.split(":", 5)[-1].partition("/")
        if kind != "inference-profile":
            return None
        model_id = rest
    if not model_id.startswith(_GEO_PREFIXES):
        return None
    for scope, prefix in zip(SCOPES, _GEO_PREFIXES, strict=True):
        if model_id.startswith(prefix) and len(model_id) > len(prefix):
            return scope
    return None


def in_scope(model_id: str, like: str) -> str:
    """`model_id` (a chain's configured id) named the way the request `like` named its model.

    * `like` is a geo or global profile id → that scope's profile of the model;
    * `like` is an inference-profile ARN → the same ARN with the model's profile in it;
    * otherwise (bare id, foundation-model ARN, application profile) → `model_id` as configured.

    A configured id that names no model (an application-inference-profile ARN) is kept.
    """
    scope = routing_scope(like)
    base = base_model_id(model_id)
    if scope is None or base.startswith("arn:"):
        return model_id
    profile = f"{scope}.{base}"
    if like.startswith("arn:"):
        prefix = like[: like.index(":inference-profile/") + 1]
        return f"{prefix}inference-profile/{profile}"
    return profile


def price_id(model_id: str) -> str:
    """The id a price is looked up by: an inference-profile ARN bills as its profile id
    (`arn:…:inference-profile/us.x` → `us.x`), a foundation-model ARN as its model."""
    if model_id.startswith("arn:"):
        kind, _, rest = model_id.split(":", 5)[-1].partition("/")
        if kind in ("foundation-model", "inference-profile") and rest:
            return rest
    return model_id
