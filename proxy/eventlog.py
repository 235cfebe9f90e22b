"""One JSON line per request on stdout: the access log, and optionally CloudWatch EMF.

The access log carries what an operator needs to trace a request (ids, who,
which model was asked and which served, tokens, cost, latency, status) and
never a credential: nothing from the request headers or body is written.

EMF (CloudWatch Embedded Metric Format) lines use the namespace, metric names
and dimension existing CloudWatch dashboards for Bedrock gateways expect:
`AIGateway/TokenUsage`, `InputTokens`, `OutputTokens`, `TotalTokens`,
`CachedResponses`, `ResponseLatency`, dimension `ModelId`.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from metering.events import UsageEvent

__all__ = ["access_record", "emf_record", "EventLog", "json_lines_logger"]

EMF_NAMESPACE = "AIGateway/TokenUsage"


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
        "cost_usd": event.cost_micro_usd / 1_000_000,
        "latency_ms": round(event.latency_ms, 3),
        "first_byte_ms": None if event.first_byte_ms is None else round(event.first_byte_ms, 3),
        "estimated": event.estimated,
        "cached": event.cached,
    }


def emf_record(event: UsageEvent) -> dict[str, Any]:
    return {
        "_aws": {
            "Timestamp": int(event.timestamp * 1000),
            "CloudWatchMetrics": [{
                "Namespace": EMF_NAMESPACE,
                "Dimensions": [["ModelId"]],
                "Metrics": [
                    {"Name": "InputTokens", "Unit": "Count"},
                    {"Name": "OutputTokens", "Unit": "Count"},
                    {"Name": "TotalTokens", "Unit": "Count"},
                    {"Name": "CachedResponses", "Unit": "Count"},
                    {"Name": "ResponseLatency", "Unit": "Milliseconds"},
                ],
            }],
        },
        "ModelId": event.model,
        "InputTokens": event.input_tokens,
        "OutputTokens": event.output_tokens,
        "TotalTokens": event.input_tokens + event.output_tokens + event.cache_read_tokens + event.cache_write_tokens,
        "CachedResponses": 1 if event.cached else 0,
        "ResponseLatency": round(event.latency_ms, 3),
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
    """Writes the enabled lines through the `costkeeper.access` / `costkeeper.emf` loggers."""

    def __init__(self, access: bool = True, emf: bool = False) -> None:
        self._access = json_lines_logger("costkeeper.access") if access else None
        self._emf = json_lines_logger("costkeeper.emf") if emf else None

    def write(self, event: UsageEvent, fallback: bool) -> None:
        if self._access is not None and self._access.isEnabledFor(logging.INFO):
            self._access.info(json.dumps(access_record(event, fallback), separators=(",", ":")))
        if self._emf is not None:
            self._emf.info(json.dumps(emf_record(event), separators=(",", ":")))
