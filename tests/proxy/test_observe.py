"""Prometheus metrics, the JSON access log and CloudWatch EMF lines from usage events."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from metering.events import UsageEvent
from proxy.admin.metrics import MAX_LABEL_CHARS, ProxyMetrics
from proxy.eventlog import EventLog, access_record, emf_record
from tests.adapters.strategies import fuzz


def _event(**changes: object) -> UsageEvent:
    fields: dict[str, object] = dict(
        request_id="r-1", timestamp=1_795_000_000.5, org="acme", app="bot", operation="ConverseStream",
        requested_model="premium", model="amazon.nova-lite-v1:0", input_tokens=10, output_tokens=20,
        cache_read_tokens=5, cache_write_tokens=0, cost_pico_usd=1_500_000_000, priced=True, latency_ms=120.5,
        first_byte_ms=30.25, status=200, estimated=False,
    )
    fields.update(changes)
    return UsageEvent(**fields)  # type: ignore[arg-type]


def _samples(metrics: ProxyMetrics, backlog: int = 0) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition(backlog).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_tokens_requests_cost_and_latency() -> None:
    metrics = ProxyMetrics()
    metrics.observe(_event(), fallback=True)
    metrics.observe(_event(request_id="r-2", cached=True, cost_pico_usd=0, input_tokens=0, output_tokens=0,
                           cache_read_tokens=0, first_byte_ms=None))
    samples = _samples(metrics, backlog=7)
    base = (("app", "bot"), ("model", "amazon.nova-lite-v1:0"), ("org", "acme"))
    assert samples[("costkeeper_tokens_total", tuple(sorted((*base, ("direction", "input")))))] == 10
    assert samples[("costkeeper_tokens_total", tuple(sorted((*base, ("direction", "cache_read")))))] == 5
    assert ("costkeeper_tokens_total", tuple(sorted((*base, ("direction", "cache_write"))))) not in samples
    requests = tuple(sorted((*base, ("operation", "ConverseStream"), ("status", "200"))))
    assert samples[("costkeeper_requests_total", requests)] == 2
    assert samples[("costkeeper_cost_usd_total", base)] == pytest.approx(0.0015)
    assert samples[("costkeeper_cached_responses_total", base)] == 1
    assert samples[("costkeeper_metering_backlog", ())] == 7
    fallback = (("app", "bot"), ("model", "amazon.nova-lite-v1:0"), ("org", "acme"), ("requested_model", "premium"))
    assert samples[("costkeeper_fallbacks_total", fallback)] == 1
    latency = tuple(sorted((*base, ("operation", "ConverseStream"))))
    assert samples[("costkeeper_request_duration_seconds_count", latency)] == 2
    assert samples[("costkeeper_first_byte_seconds_count", latency)] == 1


def test_model_label_cardinality_is_bounded() -> None:
    metrics = ProxyMetrics(max_models=3)
    for i in range(10):
        metrics.observe(_event(model=f"m{i}", requested_model=f"m{i}"))
    models = {dict(labels).get("model") for name, labels in _samples(metrics) if name == "costkeeper_requests_total"}
    assert models == {"m0", "m1", "m2", "other"}


def test_refused_ids_take_no_label_slot() -> None:
    """Ids Bedrock refused (4xx, nothing billed) count under `other` unless already labelled."""
    metrics = ProxyMetrics(max_models=3)
    refused = dict(status=400, input_tokens=0, output_tokens=0, cache_read_tokens=0, cost_pico_usd=0)
    metrics.observe(_event(model="served"))
    for i in range(50):
        metrics.observe(_event(model=f"invented-{i}", requested_model=f"invented-{i}", **refused), fallback=True)
    metrics.observe(_event(model="served", status=429, **{k: v for k, v in refused.items() if k != "status"}))
    metrics.observe(_event(model="real"))
    requests = {(dict(labels)["model"], dict(labels)["status"]): value for (name, labels), value
                in _samples(metrics).items() if name == "costkeeper_requests_total"}
    assert requests == {("served", "200"): 1, ("other", "400"): 50, ("served", "429"): 1, ("real", "200"): 1}
    fallbacks = {dict(labels)["requested_model"] for name, labels in _samples(metrics)
                 if name == "costkeeper_fallbacks_total"}
    assert fallbacks == {"other"}


def test_model_label_values_are_capped() -> None:
    metrics = ProxyMetrics()
    long_a, long_b = "a" * 1900 + "-1", "a" * 1900 + "-2"
    metrics.observe(_event(model=long_a))
    metrics.observe(_event(model=long_b))
    models = {dict(labels)["model"] for name, labels in _samples(metrics) if name == "costkeeper_requests_total"}
    assert len(models) == 2 and all(len(model) <= MAX_LABEL_CHARS for model in models)


def test_access_record_has_the_request_and_no_secret() -> None:
    record = access_record(_event(), fallback=True)
    assert record["request_id"] == "r-1" and record["model_requested"] == "premium"
    assert record["model"] == "amazon.nova-lite-v1:0" and record["fallback"] is True
    assert record["cost_usd"] == 0.0015 and record["cost_pico_usd"] == 1_500_000_000 and record["status"] == 200
    assert set(record) == {"type", "time", "request_id", "org", "app", "operation", "model_requested", "model",
                           "fallback", "status", "input_tokens", "output_tokens", "cache_read_tokens",
                           "cache_write_tokens", "cost_usd", "cost_pico_usd", "latency_ms", "first_byte_ms", "estimated",
                           "cached", "hung_up", "tags"}
    assert record["tags"] == {}


def test_emf_record_is_valid_embedded_metric_format() -> None:
    record = emf_record(_event(cached=True))
    directive = record["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "AIGateway/TokenUsage" and directive["Dimensions"] == [["ModelId"]]
    names = [metric["Name"] for metric in directive["Metrics"]]
    assert names[:5] == ["InputTokens", "OutputTokens", "TotalTokens", "CachedResponses", "ResponseLatency"]
    assert names[5:] == ["CacheReadTokens", "CacheCreationTokens", "BedrockCost"]  # cached: no Bedrock call
    for name in [*names, "ModelId"]:  # every metric and dimension is a top-level member
        assert name in record
    assert record["TotalTokens"] == 35 and record["CachedResponses"] == 1
    assert record["_aws"]["Timestamp"] == 1_795_000_000_500


def test_event_log_writes_bare_json_lines_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    log = EventLog(access=True, emf=True)
    log.write(_event(), fallback=False)
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line).get("type", "emf") for line in lines] == ["access", "emf"]


def test_event_log_batches_lines_inside_an_event_loop(capsys: pytest.CaptureFixture[str]) -> None:
    async def scenario() -> tuple[str, str, str]:
        log = EventLog(access=True, flush_interval=0.05, max_lines=3)
        log.write(_event(), fallback=False)
        log.write(_event(), fallback=False)
        held = capsys.readouterr().out  # nothing written yet: the batch waits for its timer
        await asyncio.sleep(0.1)
        timed = capsys.readouterr().out
        for _ in range(3):  # a full batch goes out at once, without waiting
            log.write(_event(), fallback=False)
        full = capsys.readouterr().out
        log.write(_event(), fallback=False)
        log.flush()  # shutdown: what is left goes out
        return held, timed, full + capsys.readouterr().out

    held, timed, rest = asyncio.run(scenario())
    assert held == ""
    assert [json.loads(line)["type"] for line in timed.splitlines()] == ["access", "access"]
    assert len(rest.splitlines()) == 4


def test_event_log_writes_whole_lines_of_at_most_pipe_buf_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """With several workers on one stdout pipe, only writes of ≤ 4096 bytes are atomic."""
    writes: list[str] = []

    class Recorder:
        def write(self, text: str) -> None:
            writes.append(text)

        def flush(self) -> None:
            pass

    monkeypatch.setattr("sys.stdout", Recorder())
    log = EventLog(access=True, emf=True, max_lines=1000)

    async def scenario() -> None:
        for index in range(60):
            log.write(_event(request_id=f"r-{index}", app="é" * index), fallback=False)
        log.flush()

    asyncio.run(scenario())
    assert len(writes) > 1
    assert all(len(text.encode()) <= 4096 and text.endswith("\n") for text in writes)
    lines = "".join(writes).splitlines()
    assert len(lines) == 120 and all(json.loads(line) for line in lines)


_AMOUNTS = st.one_of(st.integers(0, 10**12), st.floats(0, 10**6), st.just(float("inf")), st.just(float("nan")),
                     st.sampled_from([0.005, 0.01, 900.0, 900.0000001]))


@fuzz(60)
@given(events=st.lists(st.builds(
    _event, input_tokens=st.integers(0, 10**9), output_tokens=st.integers(0, 10**9),
    cache_read_tokens=st.integers(0, 9), cache_write_tokens=st.integers(0, 9),
    cost_pico_usd=st.integers(0, 10**15), latency_ms=_AMOUNTS, first_byte_ms=st.none() | _AMOUNTS,
    status=st.sampled_from([200, 400, 429]), operation=st.sampled_from(["Converse", "ConverseStream"]),
), max_size=12))
def test_observe_moves_the_series_as_the_public_api_does(events: list[UsageEvent]) -> None:
    """`observe` moves the children's values without their checks (issue #20): the exposition
    is the one `Counter.inc` and `Histogram.observe` give, whatever the amounts (a NaN
    latency lands in no bucket, 900 s in the last finite one, beyond it in +Inf)."""
    fast, public = ProxyMetrics(), ProxyMetrics()
    for event in events:
        fast.observe(event)
        labels = (event.org, event.app, public._model(event.model, not event.refused))
        for direction, count in zip(("input", "output", "cache_read", "cache_write"),
                                    (event.input_tokens, event.output_tokens, event.cache_read_tokens,
                                     event.cache_write_tokens), strict=True):
            if count:
                public.tokens.labels(*labels, direction).inc(count)
        public.requests.labels(*labels, event.operation, str(event.status)).inc()
        if event.cost_pico_usd:
            public.cost.labels(*labels).inc(event.cost_pico_usd / 10**12)
        public.latency.labels(*labels, event.operation).observe(event.latency_ms / 1000)
        if event.first_byte_ms is not None:
            public.first_byte.labels(*labels, event.operation).observe(event.first_byte_ms / 1000)
    assert _without_created(fast) == _without_created(public)


def _without_created(metrics: ProxyMetrics) -> list[bytes]:
    """The exposition's lines but the `_created` ones (when each series was made)."""
    return [line for line in metrics.exposition(0).splitlines() if b"_created" not in line]


def test_a_negative_count_is_refused_as_the_public_api_refuses_it() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        ProxyMetrics().observe(_event(input_tokens=-1))
