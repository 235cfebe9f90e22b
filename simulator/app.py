"""A Bedrock Runtime simulator speaking the real wire format.

    create_simulator(config) → Starlette app
      /_sim/*      introspection and test controls, unsigned (introspection.py)
      everything else → BedrockEndpoint:
        route on the raw path → read body → log → authenticate (403s like Bedrock)
        → model id (invalid; bare id of a profile-only model: profiles.py) → latency
        → directives / random faults (429, 500, 400) → operation handler
      InvokeModelWithBidirectionalStream (HTTP/2, its body a stream) → bidi.py

For demos, tests and benchmarks of the proxy: realistic usage numbers
(generate.py), prompt caching (cache.py), per-request fault directives and
hold gates (control.py). Run it with `costkeeper simulate`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Message, Receive, Scope, Send

from adapters.modelid import base_model_id, is_valid_model_id
from proxy.config import SimulatorConfig
from proxy.errors import (
    BedrockError,
    InternalServerException,
    ThrottlingException,
    UnknownOperationException,
    ValidationException,
)
from simulator import bidi, extras, inference, introspection, profiles, routing
from simulator.auth import authenticate
from simulator.context import Call, SimState
from simulator.control import parse_directives
from simulator.generate import malformed
from simulator.request_log import MAX_BODY_KEPT
from simulator.wire import SimulatedCut, install_log_filter, send_error

__all__ = ["create_simulator", "BedrockEndpoint"]

logger = logging.getLogger(__name__)

THROTTLED = "Too many requests, please wait before trying again."
INTERNAL_ERROR = "The system encountered an unexpected error during processing. Try your request again."
_HANDLERS: dict[str, Callable[[Call], Awaitable[None]]] = {**inference.HANDLERS, **extras.HANDLERS}
_MODEL_OPERATIONS = frozenset(inference.HANDLERS)


def create_simulator(config: SimulatorConfig) -> Starlette:
    """The ASGI app; serve it with uvicorn (`server_header=False` looks more like AWS)."""
    state = SimState(config)
    install_log_filter()
    return Starlette(routes=[*introspection.routes(state), Mount("", app=BedrockEndpoint(state))])


class BedrockEndpoint:
    """Pure ASGI (no Starlette Request/Response): raw path, raw headers, and
    streams that can be aborted mid-way."""

    def __init__(self, state: SimState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        method: str = scope["method"]
        raw_path = (scope.get("raw_path") or quote(scope["path"]).encode()).decode("latin-1")
        raw_query = scope.get("query_string", b"").decode("latin-1")
        route = routing.match(method, raw_path)
        # The bidirectional stream's body is a conversation: never read whole (simulator/bidi.py).
        body = b"" if route is not None and route.operation == bidi.OPERATION else await _read_body(receive)
        model_id = route.model_id if route else None
        base_model = base_model_id(model_id) if model_id else None
        record: dict[str, Any] = {
            "time": time.time(),
            "request_id": request_id,
            "method": method,
            "path": raw_path,
            "query": raw_query,
            "operation": route.operation if route else None,
            "model_id": model_id,
            "base_model": base_model,
            "auth": None,
            "access_key": None,
            "status": None,
            "raw_headers": scope["headers"],
            "raw_body": body if len(body) <= MAX_BODY_KEPT else body[:MAX_BODY_KEPT],
            "body_bytes": len(body),
        }
        self.state.log.add(record)
        send = _digesting(send, record)
        if route is not None and route.operation == bidi.OPERATION:
            await bidi.serve(self.state, scope, receive, send, route, request_id, record)
            return
        call: Call | None = None
        try:
            caller = authenticate(self.state.config, method=method, raw_path=raw_path, raw_query=raw_query,
                                  headers=scope["headers"], body=body, record=record)
            if route is None:
                raise UnknownOperationException("Unknown Operation")
            if model_id is not None and not is_valid_model_id(model_id):
                raise ValidationException(inference.INVALID_MODEL)
            if model_id is not None and route.operation in profiles.CHECKED_OPERATIONS:
                refused = profiles.refusal(model_id, caller.region)
                if refused is not None:
                    raise refused
            directives = parse_directives(body)
            if self.state.config.latency:
                await asyncio.sleep(self.state.config.latency)
            fault = self.state.faults.draw()
            if directives.throttle or fault == "throttle":
                raise ThrottlingException(THROTTLED)
            if fault == "error":
                raise InternalServerException(INTERNAL_ERROR)
            if directives.validation and route.operation in _MODEL_OPERATIONS:
                raise malformed("rejected by the [[sim:validation]] directive")
            call = Call(self.state, send, request_id, route.operation, model_id, base_model, route.params,
                        body, directives, caller.region, started, record)
            await _HANDLERS[route.operation](call)
        except BedrockError as error:
            if call is not None and call.head_sent:
                raise
            record["status"], record["error"] = error.status, error.code
            await send_error(send, error, request_id)
        except SimulatedCut:
            raise
        except Exception:
            if call is not None and call.head_sent:
                raise
            logger.exception("simulator bug handling %s %s", method, raw_path)
            record["status"], record["error"] = 500, "InternalServerException"
            await send_error(send, InternalServerException(INTERNAL_ERROR), request_id)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _digesting(send: Send, record: dict[str, Any]) -> Send:
    """Record a SHA-256 of the response body as sent, so tests can prove that a proxy
    relayed exactly these bytes (`response_sha256`, `response_bytes` in `/_sim/requests`)."""
    digest = hashlib.sha256()
    size = 0

    async def send_and_digest(message: Message) -> None:
        nonlocal size
        if message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            digest.update(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                record["response_sha256"], record["response_bytes"] = digest.hexdigest(), size
        await send(message)

    return send_and_digest
