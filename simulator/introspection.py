"""`/_sim/*`: what tests ask the simulator, unsigned.

    GET    /_sim/health          200 {"status": "ok"}
    GET    /_sim/requests        the last 200 requests, oldest first
    DELETE /_sim/requests        forget them
    GET    /_sim/holds           {key: number of requests waiting}
    POST   /_sim/release/{key}   open a `[[sim:hold=KEY]]` gate
    POST   /_sim/reset           requests, prompt cache, gates and async jobs

The request log is how a proxy test checks what really reached "Bedrock":
the path and model as received, the signing access key (proving the proxy
re-signed), the body, and the usage the simulator billed for it.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from simulator.context import SimState

__all__ = ["RequestLog", "routes", "MAX_RECORDS", "MAX_BODY_KEPT"]

MAX_RECORDS = 200
#: Bodies are kept up to this size: 200 requests of 25 MB would not fit in memory.
MAX_BODY_KEPT = 64 * 1024
_REDACTED = "<redacted>"


class RequestLog:
    """Records are dicts the request path fills in as it goes; raw headers and
    body (its first `MAX_BODY_KEPT` bytes) are kept as received and only
    decoded when someone asks."""

    def __init__(self, size: int = MAX_RECORDS) -> None:
        self._records: deque[dict[str, Any]] = deque(maxlen=size)

    def add(self, record: dict[str, Any]) -> None:
        self._records.append(record)

    def clear(self) -> int:
        count = len(self._records)
        self._records.clear()
        return count

    def snapshot(self) -> list[dict[str, Any]]:
        return [_public(record) for record in self._records]


def _public(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k not in ("raw_headers", "raw_body")}
    headers: dict[str, str] = {}
    for raw_name, raw_value in record.get("raw_headers", ()):
        name = raw_name.decode("latin-1").lower()
        value = _REDACTED if name == "authorization" else raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    out["headers"] = headers
    out["body"] = record.get("raw_body", b"").decode("utf-8", errors="replace")
    return out


def routes(state: SimState) -> list[Route]:
    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def requests(request: Request) -> JSONResponse:
        if request.method == "DELETE":
            return JSONResponse({"cleared": state.log.clear()})
        return JSONResponse(state.log.snapshot())

    async def holds(_: Request) -> JSONResponse:
        return JSONResponse(state.gates.waiting())

    async def release(request: Request) -> JSONResponse:
        key = request.path_params["key"]
        return JSONResponse({"key": key, "released": state.gates.release(key)})

    async def reset(_: Request) -> JSONResponse:
        state.reset()
        return JSONResponse({"status": "reset"})

    return [
        Route("/_sim/health", health, methods=["GET"]),
        Route("/_sim/requests", requests, methods=["GET", "DELETE"]),
        Route("/_sim/holds", holds, methods=["GET"]),
        Route("/_sim/release/{key}", release, methods=["POST"]),
        Route("/_sim/reset", reset, methods=["POST"]),
    ]
