"""Reconciliation: metered tokens per model and UTC hour vs Bedrock's own CloudWatch metrics.

Bedrock publishes `InputTokenCount` and `OutputTokenCount` in the `AWS/Bedrock`
namespace with the dimension `ModelId`; summed per 3600 s they should equal what
the proxy metered for the same model and hour, unless traffic bypassed the proxy
(CloudWatch higher) or usage was estimated (either side).

The metered side needs per-request timestamps: the SQLite store keeps every
event. DynamoDB keeps per-minute rate items that hold total tokens only (no
input/output split), so it cannot answer this query (`UnsupportedQuery`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from metering.sqlite_store import COUNTED_SQL
from metering.store import UnsupportedQuery

__all__ = ["HourDiff", "cloudwatch_hourly_tokens", "compare", "format_diffs", "sqlite_hourly_tokens"]

HOUR = 3600
#: (model id, hour start epoch seconds) → (input tokens, output tokens)
Hourly = dict[tuple[str, int], tuple[int, int]]


@dataclass(frozen=True, slots=True)
class HourDiff:
    model: str
    #: UTC `YYYY-MM-DDTHH:00Z`.
    hour: str
    metered_input: int
    bedrock_input: int
    metered_output: int
    bedrock_output: int
    #: True when both directions are within the tolerance.
    ok: bool

    @property
    def input_diff(self) -> int:
        return self.metered_input - self.bedrock_input

    @property
    def output_diff(self) -> int:
        return self.metered_output - self.bedrock_output


def sqlite_hourly_tokens(path: str, since: float, until: float) -> Hourly:
    """Input/output tokens per (model, hour) from the SQLite store's per-request rows
    (read-only connection: the proxy may be writing the file meanwhile). Responses the
    proxy served from its cache never reached Bedrock and are left out, as are requests
    Bedrock refused (their model ids are the clients', and they billed nothing)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.OperationalError as exc:
        raise UnsupportedQuery(f"cannot open the SQLite store {path}: {exc}") from None
    try:
        rows = conn.execute(
            "SELECT model, CAST(ts / ? AS INTEGER) * ?, SUM(input_tokens), SUM(output_tokens) "
            f"FROM usage_events WHERE ts >= ? AND ts < ? AND NOT cached AND {COUNTED_SQL} GROUP BY 1, 2",
            (HOUR, HOUR, since, until),
        ).fetchall()
    finally:
        conn.close()
    return {(str(model), int(hour)): (int(inp or 0), int(out or 0)) for model, hour, inp, out in rows}


def cloudwatch_hourly_tokens(client: Any, models: Iterable[str], since: float, until: float) -> Hourly:
    """`InputTokenCount` / `OutputTokenCount` Sums per hour for `models` and for every
    other ModelId CloudWatch lists (traffic that bypassed the proxy shows up too)."""
    wanted = set(models)
    for page in client.get_paginator("list_metrics").paginate(Namespace="AWS/Bedrock", MetricName="InputTokenCount"):
        for metric in page.get("Metrics", []):
            wanted.update(d["Value"] for d in metric.get("Dimensions", []) if d.get("Name") == "ModelId")
    ordered = sorted(wanted)
    queries = []
    for index, model in enumerate(ordered):
        for direction, metric_name in (("in", "InputTokenCount"), ("out", "OutputTokenCount")):
            queries.append({
                "Id": f"m{index}_{direction}",
                "MetricStat": {
                    "Metric": {"Namespace": "AWS/Bedrock", "MetricName": metric_name,
                               "Dimensions": [{"Name": "ModelId", "Value": model}]},
                    "Period": HOUR,
                    "Stat": "Sum",
                },
                "ReturnData": True,
            })
    totals: dict[tuple[str, int], list[int]] = {}
    start, end = datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(until, UTC)
    # GetMetricData takes at most 500 queries per call.
    for first in range(0, len(queries), 500):
        batch = queries[first:first + 500]
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"MetricDataQueries": batch, "StartTime": start, "EndTime": end}
            if token:
                kwargs["NextToken"] = token
            response = client.get_metric_data(**kwargs)
            for result in response.get("MetricDataResults", []):
                index_text, _, direction = result["Id"][1:].partition("_")
                model = ordered[int(index_text)]
                for stamp, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                    hour = int(stamp.timestamp()) // HOUR * HOUR
                    pair = totals.setdefault((model, hour), [0, 0])
                    pair[0 if direction == "in" else 1] += round(value)
            token = response.get("NextToken")
            if not token:
                break
    return {key: (pair[0], pair[1]) for key, pair in totals.items()}


def compare(metered: Mapping[tuple[str, int], tuple[int, int]],
            bedrock: Mapping[tuple[str, int], tuple[int, int]], tolerance: float) -> list[HourDiff]:
    """One row per (model, hour) either side has, sorted; `ok` when each direction differs
    by at most `tolerance` (a share of Bedrock's count; 0 → exact)."""
    diffs = []
    for model, hour in sorted(set(metered) | set(bedrock)):
        m_in, m_out = metered.get((model, hour), (0, 0))
        b_in, b_out = bedrock.get((model, hour), (0, 0))
        ok = all(abs(m - b) <= tolerance * max(b, 0) for m, b in ((m_in, b_in), (m_out, b_out)))
        stamp = datetime.fromtimestamp(hour, UTC).strftime("%Y-%m-%dT%H:00Z")
        diffs.append(HourDiff(model, stamp, m_in, b_in, m_out, b_out, ok))
    return diffs


def format_diffs(diffs: list[HourDiff], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps([{**asdict(d), "input_diff": d.input_diff, "output_diff": d.output_diff} for d in diffs],
                          indent=2)
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; expected table or json")
    width = max([len("MODEL"), *(len(d.model) for d in diffs)])
    lines = [f"{'MODEL':<{width}}  {'HOUR (UTC)':<17}  {'IN METERED':>11}  {'IN BEDROCK':>11}  {'IN DIFF':>8}  "
             f"{'OUT METERED':>11}  {'OUT BEDROCK':>11}  {'OUT DIFF':>8}  STATUS"]
    for d in diffs:
        lines.append(f"{d.model:<{width}}  {d.hour:<17}  {d.metered_input:>11}  {d.bedrock_input:>11}  "
                     f"{d.input_diff:>+8}  {d.metered_output:>11}  {d.bedrock_output:>11}  {d.output_diff:>+8}  "
                     f"{'ok' if d.ok else 'MISMATCH'}")
    if not diffs:
        lines.append("(no metered usage and no Bedrock metrics in the window)")
    return "\n".join(lines)
