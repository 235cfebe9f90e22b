"""One JSON line per request on stdout: the access log, and optionally CloudWatch EMF.

The access log carries what an operator needs to trace a request (ids, who,
which model was asked and which served, tokens, cost, latency, status) and
never a credential: nothing from the request headers or body is written. A
refused request (403) gets a line of its own type, `auth_failure`, naming the
access key id it claimed (only an id of the issued shape) and why.

EMF (CloudWatch Embedded Metric Format) lines use the namespace, metric names
and dimension existing CloudWatch dashboards for Bedrock gateways expect:
`AIGateway/TokenUsage`, `InputTokens`, `OutputTokens`, `TotalTokens`,
`CachedResponses`, `ResponseLatency`, dimension `ModelId`; and, under the names
first-generation cost trackers publish (issue #23), `CacheReadTokens` and
`CacheCreationTokens` (a cache-efficiency widget divides reads by reads +
creation), `BedrockCost` (USD, unit None) and `BedrockAPILatency` (ms; left out of
a response served from the proxy's cache, which made no Bedrock call). The
namespace and extra dimensions (`Environment: prod` …) come from
`observability.emf_namespace` and `observability.emf_dimensions`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

from metering.compact_json import compact
from metering.events import UsageEvent
from metering.journal_line import JSON_BOOLEAN as _BOOLEAN
from metering.journal_line import json_number as _number
from metering.journal_line import shared_parts
from metering.money import PICO_PER_USD

__all__ = ["EMF_METRICS", "EMF_NAMESPACE", "EMF_PROPERTIES", "access_line", "access_record", "emf_record", "EventLog",
           "json_lines_logger",
           "quota_change_record", "refusal_record"]

EMF_NAMESPACE = "AIGateway/TokenUsage"

logger = logging.getLogger(__name__)

#: One C encoder for every line (metering/compact_json.py: `json.dumps` builds one per call);
#: ASCII-only, as `_pipe_chunks` counts on.
_encode = compact


def access_record(event: UsageEvent, fallback: bool) -> dict[str, Any]:
    return {
        "type": "access",
        "time": event.timestamp,
        "request_id": event.request_id,
        "org": event.org,
        "app": event.app,
        "operation": event.operation,
        "model_requested": event.requested_model,
        "model": event.model,
        "fallback": fallback,
        "status": event.status,
        "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens,
        "cache_read_tokens": event.cache_read_tokens,
        "cache_write_tokens": event.cache_write_tokens,
        "cost_usd": event.cost_pico_usd / PICO_PER_USD,
        "cost_pico_usd": event.cost_pico_usd,
        "latency_ms": round(event.latency_ms, 3),
        "first_byte_ms": None if event.first_byte_ms is None else round(event.first_byte_ms, 3),
        "estimated": event.estimated,
        "cached": event.cached,
        "hung_up": event.hung_up,
        "tags": dict(event.tags),
    }


def access_line(event: UsageEvent, fallback: bool) -> str:
    """`_encode(access_record(event, fallback))`, written with one f-string for the usual
    event (as the journal line is, metering/journal_line.py): the dict and its walk by
    the encoder cost twice as much, on every request (issue #20). The same text to the
    byte (tests/proxy/test_access_line.py); an unusual value takes the dict's path."""
    parts = shared_parts(event)  # the journal line's, for the usual event
    if parts is None or type(fallback) is not bool:
        return _encode(access_record(event, fallback))
    e = event
    timestamp, request_id, org, app, operation, requested_model, model = parts
    first_byte = "null" if e.first_byte_ms is None else _number(round(e.first_byte_ms, 3))
    return (
        f'{{"type":"access","time":{timestamp},"request_id":{request_id},'
        f'"org":{org},"app":{app},"operation":{operation},'
        f'"model_requested":{requested_model},"model":{model},'
        f'"fallback":{_BOOLEAN[fallback]},"status":{e.status},"input_tokens":{e.input_tokens},'
        f'"output_tokens":{e.output_tokens},"cache_read_tokens":{e.cache_read_tokens},'
        f'"cache_write_tokens":{e.cache_write_tokens},"cost_usd":{_number(e.cost_pico_usd / PICO_PER_USD)},'
        f'"cost_pico_usd":{e.cost_pico_usd},"latency_ms":{_number(round(e.latency_ms, 3))},'
        f'"first_byte_ms":{first_byte},"estimated":{_BOOLEAN[e.estimated]},"cached":{_BOOLEAN[e.cached]},'
        f'"hung_up":{_BOOLEAN[e.hung_up]},"tags":{_encode(dict(e.tags)) if e.tags else "{}"}}}'
    )


def quota_change_record(*, action: str, who: str, org: str, app: str, model: str, day: str,
                        old: int | None, new: int | None, at: float) -> dict[str, Any]:
    """A runtime quota override set or unset (proxy/admin/overrides.py): who, what, old and new
    pico-USD per day (None: no override)."""
    return {"type": "quota_override", "time": at, "action": action, "who": who, "org": org, "app": app or None,
            "model": model, "day": day or None, "old_quota_pico_usd": old, "new_quota_pico_usd": new}


def refusal_record(*, request_id: str, status: int, error: str, reason: str, access_key_id: str | None,
                   org: str | None, app: str | None, client: str | None) -> dict[str, Any]:
    """The access-log line of a refused request (a 403: credentials or policy): who it
    claimed to be by access key id, never by anything secret."""
    return {
        "type": "auth_failure",
        "time": time.time(),
        "request_id": request_id,
        "status": status,
        "error": error,
        "reason": reason,
        "access_key_id": access_key_id,
        "org": org,
        "app": app,
        "client": client,
    }


#: Metric name → unit, in output order: the five dashboards have read since before
#: issue #23, then the four it added.
EMF_METRICS: dict[str, str] = {
    "InputTokens": "Count",
    "OutputTokens": "Count",
    "TotalTokens": "Count",
    "CachedResponses": "Count",
    "ResponseLatency": "Milliseconds",
    "CacheReadTokens": "Count",
    "CacheCreationTokens": "Count",
    "BedrockCost": "None",
    "BedrockAPILatency": "Milliseconds",
}
#: Members of an EMF line that are neither metrics nor dimensions.
EMF_PROPERTIES = ("RequestId", "Org", "App")


def emf_record(event: UsageEvent, namespace: str = EMF_NAMESPACE,
               dimensions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The EMF line of one request: `dimensions` are added to `ModelId` in the one
    dimension set (metrics with extra dimensions are other CloudWatch metrics, so
    none are added unless configured)."""
    extra = dict(dimensions or {})
    values: dict[str, float | int] = {
        "InputTokens": event.input_tokens,
        "OutputTokens": event.output_tokens,
        "TotalTokens": event.total_tokens,
        "CachedResponses": 1 if event.cached else 0,
        "ResponseLatency": round(event.latency_ms, 3),
        "CacheReadTokens": event.cache_read_tokens,
        "CacheCreationTokens": event.cache_write_tokens,
        "BedrockCost": event.cost_pico_usd / PICO_PER_USD,
    }
    if not event.cached:
        values["BedrockAPILatency"] = round(event.latency_ms, 3)
    return {
        "_aws": {
            "Timestamp": int(event.timestamp * 1000),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["ModelId", *extra]],
                "Metrics": [{"Name": name, "Unit": unit} for name, unit in EMF_METRICS.items() if name in values],
            }],
        },
        "ModelId": event.model,
        **extra,
        **values,
        "RequestId": event.request_id,
        "Org": event.org,
        "App": event.app,
    }


class _Stdout(logging.StreamHandler):
    """Writes to whatever `sys.stdout` is when a record is emitted (not when the
    handler was made), so a redirected stdout — or a test's capture — gets it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def json_lines_logger(name: str) -> logging.Logger:
    """A logger writing bare messages to stdout: log shippers and the CloudWatch
    agent read these lines as JSON, so no prefix may precede them."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = _Stdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


class EventLog:
    """Writes the enabled lines to stdout, batched.

    Inside a running event loop, lines are gathered and written together at most
    `flush_interval` seconds later (or at once past `max_lines`): one `write` per
    batch instead of one blocking write and one `logging` record per request,
    which cost ~6 % of a request's CPU in the profile (bench/RESULTS.md), and a
    slow reader of stdout stalls the loop once per batch, not once per line.
    `flush()` at shutdown writes what is left. Outside a loop, lines go out at once.
    """

    def __init__(self, access: bool = True, emf: bool = False, *,
                 flush_interval: float = 0.05, max_lines: int = 512,
                 emf_namespace: str = EMF_NAMESPACE, emf_dimensions: Mapping[str, str] | None = None) -> None:
        self._access = access
        self._emf = emf
        self._emf_namespace = emf_namespace
        self._emf_dimensions = dict(emf_dimensions or {})
        self._flush_interval = flush_interval
        self._max_lines = max_lines
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def write(self, event: UsageEvent, fallback: bool) -> None:
        if self._access:
            self._lines.append(access_line(event, fallback))
        if self._emf:
            self._lines.append(_encode(emf_record(event, self._emf_namespace, self._emf_dimensions)))
        self._schedule()

    def write_refusal(self, record: dict[str, Any]) -> None:
        """An access-log line for a request refused before it was metered (`refusal_record`)."""
        if self._access:
            self._lines.append(_encode(record))
            self._schedule()

    def write_change(self, record: dict[str, Any]) -> None:
        """An audit line for a change made while running (`quota_change_record`): always
        written, whatever `access_log` says — who changed a budget must not be lost."""
        self._lines.append(_encode(record))
        self._schedule()

    def _schedule(self) -> None:
        if not self._lines or self._timer is not None and len(self._lines) < self._max_lines:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if len(self._lines) >= self._max_lines:
            self.flush()
        else:
            self._timer = loop.call_later(self._flush_interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        try:
            for chunk in _pipe_chunks(lines):
                sys.stdout.write(chunk)
                sys.stdout.flush()
        except (OSError, ValueError) as exc:  # stdout closed or gone: never fail a request over a log line
            logger.warning("could not write %d access-log lines: %s", len(lines), exc)


#: POSIX writes of at most PIPE_BUF bytes to a pipe are atomic.
_PIPE_BUF = 4096


def _pipe_chunks(lines: list[str]) -> list[str]:
    """The lines joined into writes of at most PIPE_BUF bytes, each ending at a line end:
    with `--workers N` every worker writes to the same stdout pipe, and a larger write
    could interleave with another worker's in the middle of a line (a longer line
    goes out alone)."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        length = len(line) + 1  # json.dumps escapes non-ASCII: characters are bytes
        if current and size + length > _PIPE_BUF:
            chunks.append("\n".join(current) + "\n")
            current, size = [], 0
        current.append(line)
        size += length
    if current:
        chunks.append("\n".join(current) + "\n")
    return chunks
