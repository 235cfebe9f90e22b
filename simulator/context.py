"""The simulator's shared state and the per-request context handlers receive.

State lives in one object built by `create_simulator` (no module-level mutable
state), so two simulators in one process — e.g. in tests — never share caches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from proxy.config import SimulatorConfig
from simulator.cache import PromptCache
from simulator.control import Directives, Faults, HoldGates
from simulator.request_log import RequestLog

__all__ = ["SimState", "Call", "elapsed_ms"]


@dataclass(slots=True)
class SimState:
    config: SimulatorConfig
    cache: PromptCache = field(default_factory=PromptCache)
    gates: HoldGates = field(default_factory=HoldGates)
    log: RequestLog = field(default_factory=RequestLog)
    faults: Faults = field(init=False)
    #: StartAsyncInvoke jobs by invocation ARN.
    async_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.faults = Faults(self.config.throttle_rate, self.config.error_rate, self.config.seed)

    def reset(self) -> None:
        self.cache.clear()
        self.gates.clear()
        self.log.clear()
        self.async_jobs.clear()


@dataclass(slots=True)
class Call:
    """One authenticated request on its way through an operation handler."""

    state: SimState
    send: Any
    request_id: str
    operation: str
    model_id: str | None
    base_model: str | None
    params: tuple[str, ...]
    body: bytes
    directives: Directives
    region: str
    #: perf_counter() when the request arrived: latencies are measured from here.
    started: float
    #: This request's entry in the introspection log, completed as it goes.
    record: dict[str, Any]
    head_sent: bool = False


def elapsed_ms(started: float) -> int:
    """Milliseconds since `started`, at least 1 (Bedrock never reports 0)."""
    return max(1, int((time.perf_counter() - started) * 1000))
