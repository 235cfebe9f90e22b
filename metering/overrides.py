"""Runtime quota overrides: a daily quota set while the proxy runs, shared by every replica.

`costkeeper quota set` and `PUT /v1/quotas/overrides` write a `QuotaOverride` to the
store (SQLite rows in metering/sqlite_overrides.py, DynamoDB items in
metering/dynamodb_overrides.py); every replica reads them all in the background,
every `quotas.overrides_refresh` seconds (proxy/admin/overrides.py), and they win over
config.yaml: for one UTC day when `day` is set, until unset otherwise. A dated
override wins over an undated one for the same org, app and model on its day.

The stored set is small (one item per org/app/model/day someone set by hand), so a
replica reads all of it at once rather than per scope.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol, runtime_checkable

__all__ = ["QuotaOverride", "OverrideStore", "active_overrides", "ActiveOverrides"]


@dataclass(frozen=True, slots=True)
class QuotaOverride:
    org: str
    #: "" → the org's quota (an ORG-scoped org; the default of an APP-scoped org's apps).
    app: str
    #: The model id (a label is resolved before it is stored).
    model: str
    #: "YYYY-MM-DD" (UTC) → that day only; "" → until unset.
    day: str
    quota_pico_usd: int
    #: Who set it: the admin token's name, or `cli:<user>`.
    set_by: str = ""
    set_at: float = 0.0

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.org, self.app, self.model, self.day)

    def as_dict(self) -> dict[str, object]:
        return {"org": self.org, "app": self.app or None, "model": self.model, "day": self.day or None,
                "quota_pico_usd": self.quota_pico_usd, "set_by": self.set_by, "set_at": self.set_at}


#: (org, app or "") → model id → the override in force.
ActiveOverrides = Mapping[tuple[str, str], Mapping[str, QuotaOverride]]


def active_overrides(overrides: Iterable[QuotaOverride], day: str) -> ActiveOverrides:
    """The overrides in force on `day`: undated ones, and those dated `day` over them."""
    chosen: dict[tuple[str, str], dict[str, QuotaOverride]] = {}
    for override in sorted(overrides, key=lambda o: o.day != ""):  # undated first, dated replace them
        if override.day in ("", day):
            chosen.setdefault((override.org, override.app), {})[override.model] = override
    return MappingProxyType({scope: MappingProxyType(models) for scope, models in chosen.items()})


@runtime_checkable
class OverrideStore(Protocol):
    async def quota_overrides(self) -> list[QuotaOverride]:
        """Every stored override (a strongly consistent read)."""
        ...

    async def put_quota_override(self, override: QuotaOverride) -> QuotaOverride | None:
        """Store `override` in place of the one with the same key; the old one, if any."""
        ...

    async def delete_quota_override(self, org: str, app: str, model: str, day: str) -> QuotaOverride | None:
        """Remove it; the removed one, None if there was none."""
        ...

    async def clear_exhausted(self, scope: str, day: str, model: str) -> None:
        """Forget the sticky exhausted mark of `model` (its quota grew). Idempotent."""
        ...
