"""Which service tier and latency mode a request asks for, and which served it.

Bedrock bills a request by the tier that served it (BEDROCK_WIRE.md §1.1):

* service tiers `priority`, `default` (standard), `flex` and `reserved`, asked for
  with the `X-Amzn-Bedrock-Service-Tier` header (InvokeModel, …WithResponseStream)
  or `serviceTier: {type: …}` in a Converse body;
* latency `standard` or `optimized`, asked for with
  `X-Amzn-Bedrock-PerformanceConfig-Latency` or `performanceConfig: {latency: …}`.

Bedrock says what served in the same places of the response (headers for
InvokeModel, `serviceTier` / `performanceConfig` in a Converse body and in the
ConverseStream `metadata` event). It may serve less than was asked for: once the
latency-optimized quota is used up, a request is served, and billed, at standard
latency. So a request is metered by what served when the response says, else by
what it asked for (a cut stream, an estimate).

The standard values are "" here, so a `Tier()` is the standard tier.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from adapters.usage import Usage

__all__ = [
    "LATENCY_HEADER",
    "SERVICE_TIER_HEADER",
    "SERVICE_TIERS",
    "STANDARD",
    "Tier",
    "from_converse",
    "requested_tier",
    "said_by_converse",
    "served_tier",
]

SERVICE_TIER_HEADER = "x-amzn-bedrock-service-tier"
LATENCY_HEADER = "x-amzn-bedrock-performanceconfig-latency"
#: The service tiers of Bedrock's `ServiceTier.type` ("default" is the standard tier).
SERVICE_TIERS = ("priority", "default", "flex", "reserved")
_SERVICE_TIER_BYTES, _LATENCY_BYTES = SERVICE_TIER_HEADER.encode(), LATENCY_HEADER.encode()
_HEADER_LENGTHS = frozenset({len(_SERVICE_TIER_BYTES), len(_LATENCY_BYTES)})
#: Longest value kept: the client chose it (Bedrock refuses anything but the enum).
_MAX_VALUE = 32


@dataclass(frozen=True, slots=True)
class Tier:
    #: "" (standard, Bedrock's "default"), "priority", "flex", "reserved" or what the client sent.
    service_tier: str = ""
    #: "" (standard) or "optimized".
    latency: str = ""

    def __str__(self) -> str:
        parts = [self.service_tier or "standard"]
        if self.latency:
            parts.append(f"latency {self.latency}")
        return ", ".join(parts)


STANDARD = Tier()


def _service_tier(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    value = value.strip().lower()[:_MAX_VALUE]
    return "" if value == "default" else value


def _latency(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    value = value.strip().lower()[:_MAX_VALUE]
    return "" if value == "standard" else value


def from_converse(document: Mapping[str, Any]) -> Tier:
    """`serviceTier.type` and `performanceConfig.latency` of a Converse request."""
    service, latency = said_by_converse(document)
    if not service and not latency:  # most requests ask for neither: no new Tier
        return STANDARD
    return Tier(service or "", latency or "")


def said_by_converse(document: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(service tier, latency) a Converse body or `metadata` event states; None where silent."""
    service = document.get("serviceTier")
    performance = document.get("performanceConfig")
    return (
        _service_tier(service.get("type")) if _mapping(service) and "type" in service else None,
        _latency(performance.get("latency")) if _mapping(performance) and "latency" in performance else None,
    )


def _mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """`isinstance(value, Mapping)`, without the ABC's slow check for the usual None or dict
    (both fields are absent from most requests and responses)."""
    return value is not None and (type(value) is dict or isinstance(value, Mapping))


def _from_headers(headers: Iterable[tuple[str, str]]) -> tuple[str | None, str | None]:
    service = latency = None
    for name, value in headers:
        if len(name) in _HEADER_LENGTHS:  # most fields are neither: no lower() for them
            lowered = name.lower()
            if lowered == SERVICE_TIER_HEADER:
                service = _service_tier(value)
            elif lowered == LATENCY_HEADER:
                latency = _latency(value)
    return service, latency


def requested_tier(converse: bool, headers: Iterable[tuple[bytes, bytes]], document: Mapping[str, Any]) -> Tier:
    """What a request asks for: the Converse body's fields, else InvokeModel's headers
    (raw ASGI header pairs)."""
    if converse:
        return from_converse(document)
    service = latency = ""
    for name, value in headers:
        if len(name) in _HEADER_LENGTHS:  # most fields are neither: no lower() or decode for them
            lowered = name.lower()
            if lowered == _SERVICE_TIER_BYTES:
                service = _service_tier(value.decode("latin-1"))
            elif lowered == _LATENCY_BYTES:
                latency = _latency(value.decode("latin-1"))
    return Tier(service, latency)


def served_tier(requested: Tier, response_headers: Mapping[str, str], usage: Usage) -> Usage:
    """`usage` with the tier that served it: the response headers' (InvokeModel), else
    what the body or stream said (Converse, already in `usage`), else `requested`."""
    service, latency = _from_headers(response_headers.items())
    if service is None:
        service = usage.service_tier if usage.service_tier is not None else requested.service_tier
    if latency is None:
        latency = usage.latency if usage.latency is not None else requested.latency
    if service == usage.service_tier and latency == usage.latency:
        return usage
    return usage.merged(service_tier=service, latency=latency)
