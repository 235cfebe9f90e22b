"""`/_sim/*`: what tests ask the simulator, unsigned.

    GET    /_sim/health          200 {"status": "ok"}
    GET    /_sim/requests        the last 200 requests, oldest first
    DELETE /_sim/requests        forget them
    GET    /_sim/holds           {key: number of requests waiting}
    POST   /_sim/release/{key}   open a `[[sim:hold=KEY]]` gate
    POST   /_sim/reset           requests, prompt cache, gates and async jobs

The request log is how a proxy test checks what really reached "Bedrock":
the path and model as received, the signing access key (proving the proxy
re-signed), the body, and the usage the simulator billed for it (simulator/request_log.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from simulator.context import SimState

__all__ = ["routes"]


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
