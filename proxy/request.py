"""The request as the handler first reads it: a header, the body within its limit,
the body as the JSON object Bedrock expects.

Kept apart from proxy/forward.py, which sends the request on, and proxy/relay.py,
which relays the response: these run before anything is sent upstream and answer a
bad request with a `ValidationException`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive, Scope

from proxy import strict_json
from proxy.errors import RequestTimeoutException, ValidationException, refusal
from proxy.inflight import Reservation
from proxy.routing import JSON_BODY, Operation, Route
from proxy.stall_watch import StallWatch
from proxy.strict_json import BadNumber

__all__ = ["ClientGone", "header", "json_body", "read_body"]

_INVOKE_OPS = frozenset({Operation.INVOKE_MODEL, Operation.INVOKE_MODEL_STREAM})


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def read_body(
    receive: Receive,
    headers: list[tuple[bytes, bytes]],
    limit: int,
    *,
    chunk_timeout: float | None = None,
    reservation: Reservation | None = None,
) -> bytes:
    """The whole body, within `limit` bytes (400 `ValidationException` beyond).

    `chunk_timeout`: seconds to wait for each chunk; a body that stalls longer is answered
    408 `RequestTimeoutException` (the caller then closes the connection: the rest of
    the body may still come). `reservation`: holds the declared length before
    anything is read, or a chunked body's bytes as they come (503 beyond the budget).
    """
    declared: int | None = None
    for key, value in headers:
        if key == b"content-length":
            try:
                declared = max(declared or 0, int(value))
            except ValueError:
                raise ValidationException("Invalid Content-Length header.") from None
            if declared > limit:
                raise ValidationException(f"The request body of {declared} bytes exceeds the limit of {limit} bytes.")
    if reservation is not None and declared is not None:
        reservation.hold(declared)
    # The reservation of a body of undeclared length, held as chunks arrive.
    growing = None if declared is not None else reservation
    watch = StallWatch(chunk_timeout) if chunk_timeout is not None else None
    chunks: list[bytes] = []
    size = 0
    try:
        # Read here, not in a coroutine of its own: one per request less to make and resume through (issue #20).
        while True:
            message = await receive()
            if watch is not None:
                watch.fed()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ValidationException(f"The request body exceeds the limit of {limit} bytes.")
            if growing is not None:
                growing.hold(size)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
    except asyncio.CancelledError:
        if watch is None or not watch.fired:
            raise
        watch.forgive()
        raise refusal(RequestTimeoutException(
            f"Your request body was not received within the timeout period ({chunk_timeout:g} s without data)."
        ), "body_timeout") from None
    finally:
        if watch is not None:
            watch.stop()


def json_body(route: Route, body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object where Bedrock expects one; refuse a malformed one
    before it costs an upstream call. None for operations whose body is not read.

    Every InvokeModel body is read, whatever `Content-Type` the client declared
    (in any case, `text/plain`, or none): Bedrock model bodies are JSON, and a
    body the proxy did not read would skip every per-app policy and the quota.
    One it cannot read is refused here rather than forwarded ungoverned.
    """
    if route.operation not in _INVOKE_OPS and route.operation not in JSON_BODY:
        return None
    try:
        document = strict_json.loads(body)
    except BadNumber as exc:
        raise ValidationException(
            f"Malformed input request: {exc}, please reformat your input and try again."
        ) from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValidationException(
            f"Malformed input request: {exc.__class__.__name__}, please reformat your input and try again."
        ) from None
    if not isinstance(document, dict):
        raise ValidationException(
            "Malformed input request: expected a JSON object, please reformat your input and try again."
        )
    return document
