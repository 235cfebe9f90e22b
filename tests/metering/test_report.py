from __future__ import annotations

import calendar
import csv
import io
import json
import re
from collections.abc import Callable
from decimal import Decimal

import pytest

from metering.events import UsageEvent
from metering.report import (
    format_csv,
    format_json,
    format_table,
    format_usd,
    report_since,
    total_row,
    usage_report,
)
from metering.sqlite_store import SQLiteStore
from metering.store import Store, UsageRow

MakeEvent = Callable[..., UsageEvent]
NOW = float(calendar.timegm((2025, 3, 10, 12, 0, 0)))
TODAY = float(calendar.timegm((2025, 3, 10, 0, 0, 0)))
DAY = 86_400.0
COUNTS = ("requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
          "cost_pico_usd", "estimated_requests", "unpriced_requests")
MICRO = 10**6

ROWS = [
    UsageRow(org="acme", model="amazon.nova-pro-v1:0", requests=3, input_tokens=1_234_567, output_tokens=89,
             cache_read_tokens=5, cache_write_tokens=6, cost_pico_usd=12_345_678 * MICRO, estimated_requests=1),
    UsageRow(org="zeta", model="m", requests=1, input_tokens=1, output_tokens=2, cost_pico_usd=7 * MICRO,
             unpriced_requests=1),
    # Below a micro-USD: shown, summed and exported exactly.
    UsageRow(org="zeta", model="amazon.titan-embed-text-v2:0", requests=1, input_tokens=24, cost_pico_usd=480_000),
]
BY = ["org", "model"]


def numbers(row: UsageRow) -> tuple[int, ...]:
    return tuple(getattr(row, name) for name in COUNTS)


def pico(usd: str) -> int:
    value = Decimal(usd) * 10**12
    assert value == value.to_integral_value(), usd
    return int(value)


@pytest.mark.parametrize(
    ("pico_usd", "text"),
    [(0, "0.000000"), (MICRO, "0.000001"), (999_999 * MICRO, "0.999999"), (10**12, "1.000000"),
     (12_345_678 * MICRO, "12.345678"), ((10**15 + 1) * MICRO, "1000000000.000001"), (-5 * MICRO, "-0.000005"),
     # Sub-micro digits are shown, exactly, never rounded away.
     (480_000, "0.00000048"), (1, "0.000000000001"), (MICRO + 10, "0.00000100001"), (-480_000, "-0.00000048"),
     (2**63 - 1, "9223372.036854775807"), (10**30, "1000000000000000000.000000")],
)
def test_format_usd(pico_usd: int, text: str) -> None:
    assert format_usd(pico_usd) == text
    assert pico(text) == pico_usd


def test_table_parses_back() -> None:
    text = format_table(ROWS, BY)
    lines = text.splitlines()
    assert not text.endswith("\n")
    assert lines[0].split() == ["org", "model", "requests", "input", "output", "cache_read", "cache_write",
                                "cost_usd", "estimated", "unpriced"]
    assert set(lines[1].replace(" ", "")) == {"-"} and lines[1] == lines[-2]
    assert len({len(line) for line in lines[:2]}) == 1  # header as wide as the rule

    def parse(line: str, labels: int) -> tuple[list[str], tuple[int, ...]]:
        cells = re.split(r"\s{2,}", line.strip())
        values = cells[labels:]
        return cells[:labels], tuple(pico(v) if i == 5 else int(v.replace(",", "")) for i, v in enumerate(values))

    for line, row in zip(lines[2:-2], ROWS, strict=True):
        labels, parsed = parse(line, 2)
        assert labels == [row.org, row.model]
        assert parsed == numbers(row)
    labels, parsed = parse(lines[-1], 1)
    assert labels == ["TOTAL"]
    assert parsed == numbers(total_row(ROWS))
    assert "1,234,592" in lines[-1] and "12.34568548" in lines[-1]


def test_table_columns_are_aligned() -> None:
    lines = format_table(ROWS, BY).splitlines()
    # right-aligned numbers: every line's cost column ends at the same offset
    cost_ends = {line.index(cost) + len(cost) for line, cost in
                 zip(lines[2:5] + [lines[-1]], ["12.345678", "0.000007", "0.00000048", "12.34568548"],
                     strict=True)}
    assert len(cost_ends) == 1


@pytest.mark.parametrize("rows", [[], [UsageRow(requests=2, cost_pico_usd=3)]])
def test_table_without_grouping_is_one_total_line(rows: list[UsageRow]) -> None:
    lines = format_table(rows, []).splitlines()
    assert len(lines) == 3
    assert lines[-1].split()[0] == "TOTAL"
    assert lines[-1].split()[1] == str(sum(r.requests for r in rows))


def test_empty_table_has_a_zero_total() -> None:
    lines = format_table([], BY).splitlines()
    assert lines[-1].split() == ["TOTAL", "0", "0", "0", "0", "0", "0.000000", "0", "0"]


def test_json_parses_back() -> None:
    document = json.loads(format_json(ROWS, BY))
    assert document["by"] == BY
    for record, row in zip(document["rows"], ROWS, strict=True):
        assert (record["org"], record["model"]) == (row.org, row.model)
        assert tuple(record[name] for name in COUNTS) == numbers(row)
        assert record["cost_usd"] == pytest.approx(row.cost_pico_usd / 1e12)
        # As before issue #16, for readers that still use it: rounded to whole micro-USD.
        assert record["cost_micro_usd"] == round(Decimal(row.cost_pico_usd) / MICRO)
    assert tuple(document["total"][name] for name in COUNTS) == numbers(total_row(ROWS))
    assert document["total"]["cost_pico_usd"] == 12_345_685_480_000
    assert document["total"]["cost_micro_usd"] == 12_345_685
    assert "org" not in document["total"]


def test_csv_parses_back() -> None:
    records = list(csv.DictReader(io.StringIO(format_csv(ROWS, BY))))
    assert list(records[0]) == [*BY, *("cost_usd" if n == "cost_pico_usd" else n for n in COUNTS)]
    assert len(records) == len(ROWS)  # no TOTAL line
    for record, row in zip(records, ROWS, strict=True):
        assert (record["org"], record["model"]) == (row.org, row.model)
        parsed = tuple(pico(record["cost_usd"]) if name == "cost_pico_usd" else int(record[name])
                       for name in COUNTS)
        assert parsed == numbers(row)


def test_csv_quotes_awkward_values() -> None:
    rows = [UsageRow(app='chat, "beta"', requests=1)]
    [record] = list(csv.DictReader(io.StringIO(format_csv(rows, ["app"]))))
    assert record["app"] == 'chat, "beta"'


@pytest.mark.parametrize(
    ("days", "now", "since"),
    [
        (1, NOW, TODAY),
        (2, NOW, TODAY - DAY),
        (7, NOW, TODAY - 6 * DAY),
        (1, TODAY, TODAY),  # exactly midnight: today has just begun
        (1, TODAY - 0.001, TODAY - DAY),
    ],
)
def test_report_window_is_whole_utc_days(days: int, now: float, since: float) -> None:
    assert report_since(days, now) == since


@pytest.mark.parametrize(("days", "expected"), [(1, {"today", "late"}), (2, {"today", "late", "yesterday"}),
                                                (30, {"today", "late", "yesterday", "last-week"})])
@pytest.mark.anyio
async def test_usage_report_end_to_end(store: Store, make_event: MakeEvent, days: int,
                                       expected: set[str]) -> None:
    events = {
        "today": make_event("today", timestamp=TODAY, cost_pico_usd=1),
        "late": make_event("late", timestamp=NOW + 3600, cost_pico_usd=10),  # after `now`: a replica's clock
        "yesterday": make_event("yesterday", timestamp=TODAY - 0.001, cost_pico_usd=100),
        "last-week": make_event("last-week", timestamp=TODAY - 7 * DAY, cost_pico_usd=1000),
    }
    await store.write_events(list(events.values()))
    document = json.loads(await usage_report(store, days=days, by=["org"], fmt="json", now=NOW))
    assert document["total"]["requests"] == len(expected)
    assert document["total"]["cost_pico_usd"] == sum(events[name].cost_pico_usd for name in expected)
    for fmt in ("table", "csv"):
        assert "acme" in await usage_report(store, days=days, by=["org"], fmt=fmt, now=NOW)


@pytest.mark.anyio
async def test_usage_report_by_base_model(store: Store, make_event: MakeEvent) -> None:
    """`costkeeper usage --by base_model`: profiles and ARNs of a model on one line."""
    await store.write_events([
        make_event("profile", timestamp=TODAY, model="us.amazon.nova-pro-v1:0", cost_pico_usd=480_000),
        make_event("base", timestamp=TODAY, model="amazon.nova-pro-v1:0", cost_pico_usd=10**12),
        make_event("other", timestamp=TODAY, model="global.anthropic.claude-haiku-4-5-20251001-v1:0",
                   cost_pico_usd=1),
    ])
    lines = (await usage_report(store, days=1, by=["base_model"], fmt="table", now=NOW)).splitlines()
    assert lines[0].split()[:2] == ["base_model", "requests"]
    assert [line.split()[:2] for line in lines[2:-2]] == [
        ["amazon.nova-pro-v1:0", "2"], ["anthropic.claude-haiku-4-5-20251001-v1:0", "1"]]
    assert "1.00000048" in lines[2] and "0.000000000001" in lines[3]
    document = json.loads(await usage_report(store, days=1, by=["base_model"], fmt="json", now=NOW))
    assert [(r["base_model"], r["cost_pico_usd"]) for r in document["rows"]] == [
        ("amazon.nova-pro-v1:0", 10**12 + 480_000), ("anthropic.claude-haiku-4-5-20251001-v1:0", 1)]
    csv_text = await usage_report(store, days=1, by=["org", "base_model"], fmt="csv", now=NOW)
    assert csv_text.splitlines()[1].startswith("acme,amazon.nova-pro-v1:0,2,")


@pytest.mark.parametrize(("days", "by", "fmt"), [(0, [], "table"), (1, ["user"], "table"), (1, [], "xml")])
@pytest.mark.anyio
async def test_usage_report_rejects_bad_arguments(sqlite_store: SQLiteStore, days: int, by: list[str],
                                                  fmt: str) -> None:
    with pytest.raises(ValueError):
        await usage_report(sqlite_store, days=days, by=by, fmt=fmt, now=NOW)
