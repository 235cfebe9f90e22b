"""The admin port opens only once the data port listens (proxy/serve.py).

A probe, script or test that waited for /healthz must find the data port
taking connections: before, the admin server started first and a client that
connected right after /healthz answered could be refused.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import pytest

from proxy.serve import _serve_admin_once_started

pytestmark = pytest.mark.anyio


@dataclass
class _FakeServer:
    """What `_serve_admin_once_started` reads of a uvicorn.Server."""

    started: bool = False
    should_exit: bool = False
    served: list[object] = field(default_factory=list)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.served.append(sockets)


async def test_admin_serves_only_after_the_data_port_listens() -> None:
    data, admin = _FakeServer(), _FakeServer()
    task = asyncio.create_task(_serve_admin_once_started(data, admin, None))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert admin.served == [] and not task.done()
    data.started = True
    await asyncio.wait_for(task, 1)
    assert admin.served == [None]


async def test_admin_never_serves_when_the_data_port_did_not_start() -> None:
    data, admin = _FakeServer(), _FakeServer()
    task = asyncio.create_task(_serve_admin_once_started(data, admin, None))  # type: ignore[arg-type]
    await asyncio.sleep(0.02)
    admin.should_exit = True  # what serve_async's clean-up does when data.serve() returned
    await asyncio.wait_for(task, 1)
    assert admin.served == []
