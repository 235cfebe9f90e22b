"""The data-port ASGI handler: identify, forward, relay, meter.

One path for every operation (STYLE.md): build the upstream request, send it
with `stream=True`, relay `aiter_raw()` as it arrives, and record usage in a
`finally` so a client hang-up or an upstream cut still meters what was used.

* Event streams are relayed frame by frame (never buffered beyond one partial
  frame): if the upstream cuts mid-stream, the client gets a well-formed
  exception frame instead of a silent truncation.
* A client that hangs up cancels the relay, which closes the upstream request.
* Upstream errors (status, `x-amzn-ErrorType`, body) pass through unchanged.
"""

from __future__ import annotations

import json
import logging
import time

import anyio
import httpx
from starlette.types import Receive, Scope, Send

from adapters.usage import Usage
from adapters.watch import BodyUsageWatcher, StreamUsageWatcher
from metering.events import UsageEvent
from metering.pricing import PriceTable
from metering.recorder import UsageRecorder
from proxy.errors import (
    BedrockError,
    ServiceUnavailableException,
    ValidationException,
    error_parts,
    new_request_id,
    stream_error_frame,
)
from proxy.headers import request_headers_for_upstream, response_headers_for_client
from proxy.identity import Authenticator, Caller
from proxy.routing import JSON_BODY, METERED, Operation, Route, parse_route
from proxy.upstream import Upstream

__all__ = ["ProxyHandler"]

logger = logging.getLogger(__name__)

_EVENTSTREAM = "application/vnd.amazon.eventstream"
_INVOKE_OPS = frozenset({Operation.INVOKE_MODEL, Operation.INVOKE_MODEL_STREAM})


class _ClientGone(Exception):
    """The client disconnected before its request body was complete."""


class ProxyHandler:
    def __init__(
        self,
        *,
        authenticator: Authenticator,
        upstream: Upstream,
        recorder: UsageRecorder,
        prices: PriceTable,
        max_body_bytes: int,
        max_usage_body_bytes: int,
    ) -> None:
        self._auth = authenticator
        self._upstream = upstream
        self._recorder = recorder
        self._prices = prices
        self._max_body = max_body_bytes
        self._max_usage_body = max_usage_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        raw_path, _, raw_query = scope.get("raw_path", scope["path"].encode()).decode("latin-1").partition("?")
        raw_query = raw_query or scope.get("query_string", b"").decode("latin-1")
        method = scope["method"]
        try:
            route = parse_route(method, raw_path)
            body = await _read_body(receive, scope["headers"], self._max_body)
            caller = await self._auth.identify(
                method=method,
                raw_path=raw_path,
                raw_query=raw_query,
                headers=scope["headers"],
                authorization=_header(scope, b"authorization"),
                host=_header(scope, b"host") or "",
                body=body,
            )
            _check_body(route, scope, body)
            headers = request_headers_for_upstream(scope["headers"])
            try:
                response = await self._upstream.send(method, raw_path, raw_query, headers, body)
            except httpx.TimeoutException:
                raise ServiceUnavailableException("Timed out connecting to the upstream Bedrock endpoint.") from None
            except httpx.TransportError:
                raise ServiceUnavailableException("Could not reach the upstream Bedrock endpoint.") from None
        except BedrockError as error:
            await _send_error(send, error)
            return
        except _ClientGone:
            return
        await self._relay(receive, send, route, caller, body, response, started)

    async def _relay(
        self,
        receive: Receive,
        send: Send,
        route: Route,
        caller: Caller,
        body: bytes,
        response: httpx.Response,
        started: float,
    ) -> None:
        model_id = route.model_id or ""
        is_stream = response.status_code == 200 and response.headers.get("content-type", "").startswith(_EVENTSTREAM)
        stream_watcher = StreamUsageWatcher(route.operation, model_id, body) if is_stream else None
        body_watcher = None if is_stream else BodyUsageWatcher(route.operation, model_id, body, self._max_usage_body)
        headers = response_headers_for_client(response.headers.raw)
        if model_id:
            headers += [
                (b"x-costkeeper-model-id", model_id.encode()),
                (b"x-costkeeper-fallback", b"false"),
                (b"x-costkeeper-mode", b"NORMAL"),
            ]
        first_byte: float | None = None
        try:
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            async with anyio.create_task_group() as group:
                group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
                try:
                    async for chunk in response.aiter_raw():
                        if stream_watcher is not None:
                            chunk = stream_watcher.feed(chunk)
                        else:
                            body_watcher.feed(chunk)  # type: ignore[union-attr]
                        if chunk:
                            if first_byte is None:
                                first_byte = time.perf_counter()
                            await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except (httpx.TransportError, httpx.StreamError) as exc:
                    if stream_watcher is None:
                        raise  # A non-stream body cannot be ended cleanly: abort the connection.
                    logger.warning("upstream stream for %s ended early: %s", route.operation, type(exc).__name__)
                    frame = stream_error_frame(
                        ServiceUnavailableException("The upstream stream ended before it was complete.")
                    )
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
            if route.operation in METERED or route.operation == Operation.COUNT_TOKENS:
                if stream_watcher is not None:
                    usage = stream_watcher.finish()
                else:
                    usage = body_watcher.finish(response.status_code, response.headers)  # type: ignore[union-attr]
                self._meter(route, caller, response, usage, started, first_byte)

    def _meter(
        self,
        route: Route,
        caller: Caller,
        response: httpx.Response,
        usage: Usage,
        started: float,
        first_byte: float | None,
    ) -> None:
        model = route.model_id or ""
        self._recorder.record(UsageEvent.from_usage(
            usage,
            self._prices,
            request_id=response.headers.get("x-amzn-requestid") or new_request_id(),
            timestamp=time.time(),
            org=caller.org,
            app=caller.app,
            operation=str(route.operation),
            requested_model=model,
            model=model,
            latency_ms=(time.perf_counter() - started) * 1000,
            first_byte_ms=None if first_byte is None else (first_byte - started) * 1000,
            status=response.status_code,
        ))


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _read_body(receive: Receive, headers: list[tuple[bytes, bytes]], limit: int) -> bytes:
    for key, value in headers:
        if key == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise ValidationException("Invalid Content-Length header.") from None
            if declared > limit:
                raise ValidationException(f"The request body of {declared} bytes exceeds the limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ValidationException(f"The request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _check_body(route: Route, scope: Scope, body: bytes) -> None:
    """Refuse a body Bedrock would refuse as malformed, before it costs an upstream call."""
    if route.operation in JSON_BODY:
        pass
    elif route.operation in _INVOKE_OPS:
        content_type = _header(scope, b"content-type")
        if content_type is not None and "json" not in content_type:
            return
    else:
        return
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationException(f"Malformed input request: {exc.__class__.__name__}, please reformat your input and try again.") from None
    if not isinstance(document, dict):
        raise ValidationException("Malformed input request: expected a JSON object, please reformat your input and try again.")


async def _send_error(send: Send, error: BedrockError) -> None:
    status, headers, payload = error_parts(error, new_request_id())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})

