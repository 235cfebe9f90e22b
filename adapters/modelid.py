"""Model identity: from whatever a client puts in the path to the base model.

A client may name a base model (`amazon.nova-lite-v1:0`), a geo or global
inference profile (`us.anthropic.claude-…`, `global.…`) or an ARN
(foundation-model, inference-profile, application-inference-profile, …).
Family and price follow the base model. Forms: BEDROCK_WIRE.md §1.2.
"""

from __future__ import annotations

import re
from urllib.parse import quote

__all__ = ["base_model_id", "is_valid_model_id", "encode_model_id", "MAX_MODEL_ID_LENGTH"]

MAX_MODEL_ID_LENGTH = 2048
#: Model ids, profile ids and ARNs only ever use these characters.
_VALID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/+\-]*$")
_GEO_PREFIXES = ("us-gov.", "us.", "eu.", "apac.", "jp.", "au.", "ca.", "global.")


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
    for prefix in _GEO_PREFIXES:
        if model_id.startswith(prefix) and len(model_id) > len(prefix):
            return model_id[len(prefix):]
    return model_id


def encode_model_id(model_id: str) -> str:
    """Encode a model id for the path the way botocore does (safe chars `-_.~` only)."""
    return quote(model_id, safe="-_.~")
