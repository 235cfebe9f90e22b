"""`costkeeper usage`: a usage summary as a text table, JSON or CSV.

The window is whole UTC days, the days quotas reset on: `days=1` is today
since 00:00 UTC, `days=7` is today and the six days before. Costs are exact:
integer pico-USD printed as USD with 6 decimals, or more when a cost has them
(`metering.money.format_usd`), never through a float. JSON carries
`cost_pico_usd` (exact), the convenience `cost_usd` number, and `cost_micro_usd`
(rounded) for readers of the format before issue #16; the usage API shares it.
`by` may name `base_model`: the model without geo/global prefix or ARN.
Every format is returned without a trailing newline, ready for `print`.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from metering.money import format_usd, usd_fields
from metering.store import UsageRow, UsageStore, normalize_group_by

__all__ = [
    "FORMATS",
    "format_csv",
    "format_json",
    "format_table",
    "format_usd",
    "report_since",
    "total_row",
    "usage_report",
]

#: Numeric columns in output order: (UsageRow field, table header).
_COUNTS = (
    ("requests", "requests"),
    ("input_tokens", "input"),
    ("output_tokens", "output"),
    ("cache_read_tokens", "cache_read"),
    ("cache_write_tokens", "cache_write"),
    ("cost_pico_usd", "cost_usd"),
    ("estimated_requests", "estimated"),
    ("unpriced_requests", "unpriced"),
)
_NUMBER_FIELDS = [name for name, _ in _COUNTS]


def total_row(rows: Sequence[UsageRow]) -> UsageRow:
    """The sum of `rows`, with every group field None."""
    return UsageRow(**{name: sum(getattr(row, name) for row in rows) for name in _NUMBER_FIELDS})


def format_table(rows: Sequence[UsageRow], by: Sequence[str]) -> str:
    """Aligned columns, thousands separators, and a TOTAL line (the only line
    when `by` is empty)."""
    groups = normalize_group_by(by)
    label_headers: list[str] = list(groups) or [""]
    body = [[str(value) for value in row.group(groups)] + _table_counts(row) for row in rows] if groups else []
    total = ["TOTAL"] + [""] * (len(label_headers) - 1) + _table_counts(total_row(rows))
    header = label_headers + [title for _, title in _COUNTS]
    widths = [max(len(line[i]) for line in [header, total, *body]) for i in range(len(header))]
    labels = len(label_headers)

    def render(line: list[str]) -> str:
        cells = [cell.ljust(w) if i < labels else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(line, widths, strict=True))]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [render(header), rule, *(render(line) for line in body)]
    if body:
        lines.append(rule)
    lines.append(render(total))
    return "\n".join(lines)


def _table_counts(row: UsageRow) -> list[str]:
    return [format_usd(row.cost_pico_usd) if name == "cost_pico_usd" else f"{getattr(row, name):,}"
            for name, _ in _COUNTS]


def _record(row: UsageRow, groups: Sequence[str]) -> dict[str, object]:
    record: dict[str, object] = {name: row.value(name) for name in groups}
    for name, _ in _COUNTS:
        record[name] = getattr(row, name)
    record.update(usd_fields("cost", row.cost_pico_usd))
    return record


def format_json(rows: Sequence[UsageRow], by: Sequence[str]) -> str:
    """`{"by": [...], "rows": [...], "total": {...}}`; each row has its group
    fields, the counts, `cost_pico_usd` (exact), `cost_usd` (a number) and
    `cost_micro_usd` (rounded to whole micro-USD, as before issue #16)."""
    groups = normalize_group_by(by)
    document = {
        "by": list(groups),
        "rows": [_record(row, groups) for row in rows],
        "total": _record(total_row(rows), ()),
    }
    return json.dumps(document, indent=2)


def format_csv(rows: Sequence[UsageRow], by: Sequence[str]) -> str:
    """A header and one line per row; no TOTAL line, so spreadsheet sums stay right.
    Cost is `cost_usd`, exact, with 6 decimals or more (`format_usd`)."""
    groups = normalize_group_by(by)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*groups, *("cost_usd" if name == "cost_pico_usd" else name for name, _ in _COUNTS)])
    for row in rows:
        writer.writerow([*row.group(groups), *(
            format_usd(row.cost_pico_usd) if name == "cost_pico_usd" else getattr(row, name)
            for name, _ in _COUNTS
        )])
    return out.getvalue().removesuffix("\n")


FORMATS: dict[str, Callable[[Sequence[UsageRow], Sequence[str]], str]] = {
    "table": format_table,
    "json": format_json,
    "csv": format_csv,
}


def report_since(days: int, now: float) -> float:
    """Start of the window: 00:00 UTC, `days - 1` days before `now`'s UTC day."""
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today - timedelta(days=days - 1)).timestamp()


async def usage_report(
    store: UsageStore, days: int, by: Sequence[str], fmt: str, now: float | None = None
) -> str:
    """The last `days` UTC days, today included, up to now (and any event
    stamped later: replicas' clocks differ), grouped by `by`, in `fmt`."""
    formatter = FORMATS.get(fmt)
    if formatter is None:
        raise ValueError(f"unknown format {fmt!r}; expected one of {sorted(FORMATS)}")
    groups = normalize_group_by(by)
    since = report_since(days, time.time() if now is None else now)
    return formatter(await store.usage_summary(since, None, groups), groups)
