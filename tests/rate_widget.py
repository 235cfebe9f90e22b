"""The figures a first-generation CloudWatch rate widget shows, computed as its Lambda
does from the DynamoDB rate items alone (issue #23)."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["widget_figures"]


def widget_figures(items: list[dict[str, Any]], field: str, now: float) -> dict[str, object]:
    """The widget's three figures, computed as its Lambda does, from items alone:
    the peak and average of the last five minutes (missing minutes are 0) and the
    overall peak with its timestamp."""
    values = {item["timestamp"]["S"]: int(item[field]["N"]) for item in items}
    minute = int(now // 60) * 60
    recent = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(minute - 60 * back)) for back in range(5)]
    in_recent = [values.get(stamp, 0) for stamp in recent]
    peak = max(values, key=lambda stamp: (values[stamp], stamp))
    return {"recent_peak_5m": max(in_recent), "avg_5m": sum(in_recent) / 5,
            "overall_peak": {"value": values[peak], "time": peak}}
