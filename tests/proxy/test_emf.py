"""EMF lines read as CloudWatch reads them (issue #23): today's five metrics unchanged,
the four seed metrics added, a configurable namespace and extra dimensions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metering.events import UsageEvent
from proxy.app import CostKeeper
from proxy.config_checks import ConfigError
from proxy.config_load import load_config
from proxy.eventlog import EventLog, emf_record

#: The units CloudWatch accepts (PutMetricData's StandardUnit).
UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
         "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
         "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
         "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None"}

#: The metrics of an EMF line before issue #23, which dashboards read: name → unit.
BEFORE = {"InputTokens": "Count", "OutputTokens": "Count", "TotalTokens": "Count", "CachedResponses": "Count",
          "ResponseLatency": "Milliseconds"}


def cloudwatch_datums(line: str) -> list[dict[str, Any]]:
    """The metric data CloudWatch extracts from one EMF line, validating it as the EMF
    specification says (a line it would reject raises AssertionError)."""
    record = json.loads(line)
    assert isinstance(record, dict)
    aws = record["_aws"]
    assert isinstance(aws["Timestamp"], int) and aws["Timestamp"] > 0
    datums = []
    for directive in aws["CloudWatchMetrics"]:
        namespace = directive["Namespace"]
        assert isinstance(namespace, str) and 1 <= len(namespace) <= 255
        assert isinstance(directive["Dimensions"], list)
        assert 1 <= len(directive["Metrics"]) <= 100
        for dimension_set in directive["Dimensions"]:
            assert len(dimension_set) <= 30
            for name in dimension_set:  # a dimension names a top-level string member
                assert isinstance(record.get(name), str) and record[name], name
        for metric in directive["Metrics"]:
            assert metric.get("Unit", "None") in UNITS, metric
            value = record.get(metric["Name"])  # a metric names a top-level number
            assert isinstance(value, (int, float)) and not isinstance(value, bool), metric["Name"]
            for dimension_set in directive["Dimensions"]:
                datums.append({"namespace": namespace, "dimensions": {name: record[name] for name in dimension_set},
                               "name": metric["Name"], "unit": metric.get("Unit", "None"), "value": value})
    return datums


def _event(**changes: Any) -> UsageEvent:
    fields: dict[str, Any] = dict(
        request_id="r-1", timestamp=1_795_000_000.5, org="acme", app="bot", operation="ConverseStream",
        requested_model="premium", model="amazon.nova-lite-v1:0", input_tokens=10, output_tokens=20,
        cache_read_tokens=30, cache_write_tokens=10, cost_pico_usd=1_500_000_000, priced=True, latency_ms=120.5,
        first_byte_ms=30.25, status=200, estimated=False,
    )
    fields.update(changes)
    return UsageEvent(**fields)


def _by_name(line: str) -> dict[str, dict[str, Any]]:
    return {datum["name"]: datum for datum in cloudwatch_datums(line)}


def test_defaults_keep_the_five_metrics_and_add_the_four() -> None:
    datums = _by_name(json.dumps(emf_record(_event())))
    for name, unit in BEFORE.items():
        assert datums[name]["namespace"] == "AIGateway/TokenUsage"
        assert datums[name]["dimensions"] == {"ModelId": "amazon.nova-lite-v1:0"}
        assert datums[name]["unit"] == unit
    assert {name: datums[name]["value"] for name in BEFORE} == {
        "InputTokens": 10, "OutputTokens": 20, "TotalTokens": 70, "CachedResponses": 0, "ResponseLatency": 120.5}
    assert [datum for datum in datums if datum not in BEFORE] == [
        "CacheReadTokens", "CacheCreationTokens", "BedrockCost", "BedrockAPILatency"]
    assert (datums["CacheReadTokens"]["value"], datums["CacheCreationTokens"]["value"]) == (30, 10)
    assert (datums["BedrockCost"]["value"], datums["BedrockCost"]["unit"]) == (0.0015, "None")
    assert (datums["BedrockAPILatency"]["value"], datums["BedrockAPILatency"]["unit"]) == (120.5, "Milliseconds")
    # The cache-efficiency widget's division: reads ÷ (reads + creation).
    assert datums["CacheReadTokens"]["value"] / (
        datums["CacheReadTokens"]["value"] + datums["CacheCreationTokens"]["value"]) == 0.75


#: The EMF line of `_event()` as Cost Keeper wrote it before issue #23 (`emf_record` at
#: 0445672^), verbatim: what dashboards built on it read.
OLD_LINE = ('{"_aws":{"Timestamp":1795000000500,"CloudWatchMetrics":[{"Namespace":"AIGateway/TokenUsage",'
            '"Dimensions":[["ModelId"]],"Metrics":[{"Name":"InputTokens","Unit":"Count"},'
            '{"Name":"OutputTokens","Unit":"Count"},{"Name":"TotalTokens","Unit":"Count"},'
            '{"Name":"CachedResponses","Unit":"Count"},{"Name":"ResponseLatency","Unit":"Milliseconds"}]}]},'
            '"ModelId":"amazon.nova-lite-v1:0","InputTokens":10,"OutputTokens":20,"TotalTokens":70,'
            '"CachedResponses":0,"ResponseLatency":120.5,"RequestId":"r-1","Org":"acme","App":"bot"}')


def test_the_default_line_says_all_the_old_line_said_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    """Defaults keep today's output: the line an `EventLog` writes by default holds the
    old line's members with the same values, in the same namespace and dimension set,
    and CloudWatch extracts from it every datum it extracted from the old line, the
    same; only the four metrics of issue #23 are added."""
    EventLog(access=False, emf=True).write(_event(), fallback=False)
    [line] = capsys.readouterr().out.splitlines()
    old, new = json.loads(OLD_LINE), json.loads(line)
    assert {name: new.get(name) for name in old if name != "_aws"} == {k: v for k, v in old.items() if k != "_aws"}
    [old_directive], [new_directive] = old["_aws"]["CloudWatchMetrics"], new["_aws"]["CloudWatchMetrics"]
    assert new["_aws"]["Timestamp"] == old["_aws"]["Timestamp"]
    assert (new_directive["Namespace"], new_directive["Dimensions"]) == (old_directive["Namespace"],
                                                                      old_directive["Dimensions"])
    assert new_directive["Metrics"][:5] == old_directive["Metrics"]
    added = [datum for datum in cloudwatch_datums(line) if datum not in cloudwatch_datums(OLD_LINE)]
    assert len(cloudwatch_datums(line)) - len(added) == len(cloudwatch_datums(OLD_LINE)) == 5
    assert [datum["name"] for datum in added] == ["CacheReadTokens", "CacheCreationTokens", "BedrockCost",
                                                  "BedrockAPILatency"]
    assert set(new) - set(old) == {"CacheReadTokens", "CacheCreationTokens", "BedrockCost", "BedrockAPILatency"}


def test_a_cached_response_has_no_bedrock_latency() -> None:
    datums = _by_name(json.dumps(emf_record(_event(cached=True, cost_pico_usd=0))))
    assert "BedrockAPILatency" not in datums
    assert datums["CachedResponses"]["value"] == 1 and datums["BedrockCost"]["value"] == 0


def test_namespace_and_extra_dimensions_from_config(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default SQLite store path is relative
    path = tmp_path / "config.yaml"
    path.write_text("observability: {emf: true, access_log: false, emf_namespace: Seed/Costs,"
                    " emf_dimensions: {Environment: prod, Team: ml}}\n")
    CostKeeper(load_config(path, environ={})).event_log.write(_event(), fallback=False)  # as the proxy builds it
    [line] = capsys.readouterr().out.splitlines()
    datums = cloudwatch_datums(line)
    assert len(datums) == 9
    assert all(datum["namespace"] == "Seed/Costs" for datum in datums)
    assert all(datum["dimensions"] == {"ModelId": "amazon.nova-lite-v1:0", "Environment": "prod", "Team": "ml"}
               for datum in datums)


@pytest.mark.parametrize("setting", ["emf_namespace: ''", "emf_dimensions: {ModelId: x}",
                                     "emf_dimensions: {BedrockCost: x}", "emf_dimensions: {Environment: ''}",
                                     "emf_dimensions: {Environment: 3}", "emf_dimensions: [a]"])
def test_bad_emf_settings_are_refused(tmp_path: Path, setting: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"observability: {{{setting}}}\n")
    with pytest.raises(ConfigError, match="observability.emf_"):
        load_config(path, environ={})


@given(st.builds(_event, input_tokens=st.integers(0, 10**9), output_tokens=st.integers(0, 10**9),
                 cache_read_tokens=st.integers(0, 10**9), cache_write_tokens=st.integers(0, 10**9),
                 cost_pico_usd=st.integers(0, 10**18), latency_ms=st.floats(0, 10**7), cached=st.booleans(),
                 model=st.text(min_size=1, max_size=80)))
def test_every_line_is_valid_emf_with_the_events_numbers(event: UsageEvent) -> None:
    datums = _by_name(json.dumps(emf_record(event, "AIGateway/TokenUsage", {"Environment": "prod"})))
    assert datums["TotalTokens"]["value"] == event.total_tokens
    assert datums["BedrockCost"]["value"] == event.cost_pico_usd / 10**12
    assert ("BedrockAPILatency" in datums) is not event.cached
