"""The data port's ASGI app: the lifespan, and every request to the proxy handler.

A plain ASGI callable rather than a Starlette app: the data port has one route
(everything goes to `ProxyHandler`, which answers Bedrock-shaped errors itself),
so Starlette's router and its two middleware layers only cost time — about 3 %
of the CPU of a request in the profile in bench/RESULTS.md. What they did that
still matters is kept here: the lifespan protocol, and a Bedrock-shaped 500 (not
a plain-text one) when the handler fails in a way it did not foresee.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from starlette.types import Receive, Scope, Send

from proxy.errors import InternalServerException, send_error
from proxy.upstream import UpstreamBroken

__all__ = ["DataApp"]

logger = logging.getLogger(__name__)

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class DataApp:
    def __init__(
        self,
        handler: ASGIApp,
        startup: Callable[[], Awaitable[None]],
        shutdown: Callable[[], Awaitable[None]],
    ) -> None:
        self._handler = handler
        self._startup = startup
        self._shutdown = shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                await self._handler(scope, receive, send)
            except UpstreamBroken as exc:
                # A JSON body cut by the upstream after its head was relayed: nothing
                # well-formed can follow, the server drops the connection (the client's
                # SDK sees a short body and retries). A fault of the network, not a bug.
                logger.warning("upstream body for %s ended early (%s): connection dropped",
                               scope.get("path", "?"), exc)
            except Exception:
                logger.exception("unexpected error while proxying %s", scope.get("path", "?"))
                await _send_internal_error(send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._startup()
                except Exception as exc:
                    logger.exception("start-up failed")
                    with contextlib.suppress(Exception):
                        await self._shutdown()
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self._shutdown()
                except Exception as exc:
                    logger.exception("shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _send_internal_error(send: Send) -> None:
    """A Bedrock-shaped 500 if the response has not started; else the server drops the connection.

    The server refuses a second head with a RuntimeError (uvicorn, proxy/h2_server.py); the
    body right after a head it took is never refused, so the RuntimeError caught here is the head's."""
    with contextlib.suppress(RuntimeError):  # the response had already started: nothing well-formed can follow
        await send_error(send, InternalServerException("Internal server error."))
