"""The proxy served in this process: its data port and admin port on uvicorn.

`costkeeper serve` runs it as the one process (proxy/cli.py); with `server.workers: N`
each worker process runs it on the sockets its supervisor bound (proxy/workers.py).
Kept apart from both so neither imports the other: the CLI starts the supervisor,
the supervisor's workers start this, and this knows a worker only as the
`ServingWorker` it is handed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

import uvicorn

from proxy.config import Config
from proxy.worker_journals import recover_retired_journals

if TYPE_CHECKING:
    from proxy.app import CostKeeper

__all__ = ["ServingWorker", "configure_logging", "loop_factory", "serve_async"]

logger = logging.getLogger("costkeeper")


class ServingWorker(Protocol):
    """One of `server.workers` (proxy/workers.py's `Worker`): its index (0 also serves the
    admin port), the sockets its supervisor bound, and the watch that reports to it."""

    @property
    def index(self) -> int: ...

    @property
    def data_socket(self) -> socket.socket: ...

    @property
    def admin_socket(self) -> socket.socket | None: ...

    def watch(self, keeper: CostKeeper, server: uvicorn.Server, stop: Callable[[], None]) -> asyncio.Task[None]: ...


def configure_logging(config: Config) -> None:
    """Here and in every worker process (proxy/workers.py)."""
    logging.basicConfig(
        level=config.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # Libraries whose log lines hold credentials, whatever --log-level says: botocore's
    # DEBUG lines print each canonical request (the upstream's x-amz-security-token) and
    # DynamoDB bodies (issued keys); httpx's INFO line prints every URL it calls, the
    # alert webhook's secret one included (found by tests/e2e/test_security_secrets.py).
    for name, floor in (("botocore", logging.INFO), ("aiobotocore", logging.INFO), ("httpx", logging.WARNING)):
        logging.getLogger(name).setLevel(max(logging.getLogger().level, floor))


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to `serve_async`, which runs two of them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn[standard] brings it): about half the CPU per request."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def serve_async(config: Config, worker: ServingWorker | None = None) -> int:
    """The proxy in this process: all of it, or one of `server.workers` (proxy/workers.py)."""
    from metering.secret_box import SecretKeyError
    from proxy.admin.app import create_admin_app
    from proxy.app import CostKeeper, create_app
    from proxy.h2_server import H2Settings
    from proxy.head_timeout import head_timeout_protocol
    from proxy.protocol_sniff import data_port_protocol, offer_h2_over_tls

    keeper = CostKeeper(config)
    try:
        await keeper.unlock_secrets()
    except SecretKeyError as exc:
        await keeper.store.aclose()
        print(f"costkeeper: {exc}", file=sys.stderr)
        return 2
    if worker is None or worker.index == 0:
        await recover_retired_journals(config)
    server = config.server
    # uvicorn has no timeout for a request head of its own (a slow loris holds a connection for ever).
    protocol = head_timeout_protocol(config.limits.head_timeout)
    limits = config.limits
    # HTTP/1.1 and HTTP/2 on one port (proxy/protocol_sniff.py).
    data_protocol = data_port_protocol(limits.head_timeout, H2Settings(
        max_concurrent_streams=limits.max_concurrent_streams, max_header_bytes=limits.max_header_bytes,
        max_header_count=limits.max_header_count, idle_timeout=server.keepalive_timeout,
        first_request_timeout=limits.head_timeout))
    data_config = uvicorn.Config(
        create_app(config, keeper),
        http=data_protocol,
        host=server.host,
        port=server.port,
        ssl_certfile=server.tls_cert,
        ssl_keyfile=server.tls_key,
        lifespan="on",
        timeout_keep_alive=server.keepalive_timeout,
        access_log=False,
        log_config=None,
        server_header=False,
        # Nothing reads the client address, so uvicorn's X-Forwarded-For rewriting
        # (a middleware layer on every request) has no job here.
        proxy_headers=False,
    )
    data_config.load()
    offer_h2_over_tls(data_config.ssl)
    data = _Server(data_config)
    admin = _Server(uvicorn.Config(
        create_admin_app(keeper),
        http=protocol,
        host=server.admin_host,
        port=server.admin_port,
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
    ))
    loop = asyncio.get_running_loop()

    def stop() -> None:
        data.should_exit = True
        keeper.drain.begin(config.server.stream_drain_timeout)  # open conversations do not hold the shutdown

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    # Re-read config.yaml (proxy/admin/reload.py); a supervisor passes its SIGHUP to every worker.
    loop.add_signal_handler(signal.SIGHUP, keeper.watcher.trigger)
    # A worker serves the sockets its supervisor bound; only worker 0 the admin port.
    data_sockets = admin_sockets = None
    watcher = admin_task = None
    if worker is not None:
        data_sockets = [worker.data_socket]
        admin_sockets = [worker.admin_socket] if worker.admin_socket is not None else []
        watcher = worker.watch(keeper, data, stop)
    if admin_sockets != []:
        admin_task = asyncio.create_task(_serve_admin_once_started(data, admin, admin_sockets))
    tune = asyncio.create_task(_tune_for_latency_once_started(data))
    try:
        await data.serve(data_sockets)
    finally:
        tune.cancel()
        admin.should_exit = True
        if admin_task is not None:
            await admin_task
        if watcher is not None:
            watcher.cancel()
    if not data.started:
        logger.error("the proxy did not start (see the messages above)")
        return 1
    return 0


#: How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms).
_GIL_SWITCH_INTERVAL = 0.0005


async def _started(server: uvicorn.Server, *, unless: uvicorn.Server | None = None) -> bool:
    """Wait until `server` listens; False if it (or `unless`) is told to exit first."""
    while not server.started:
        if server.should_exit or (unless is not None and unless.should_exit):
            return False
        await asyncio.sleep(0.01)
    return True


async def _serve_admin_once_started(data: uvicorn.Server, admin: uvicorn.Server,
                                    sockets: list[socket.socket] | None) -> None:
    """The admin port opens once the data port listens: a /healthz or /readyz that
    answers means traffic is taken (a probe, a test or a script that waited for it
    would otherwise race the data port's start-up and be refused)."""
    if await _started(data, unless=admin):
        await admin.serve(sockets)


async def _tune_for_latency_once_started(server: uvicorn.Server) -> None:
    """Two interpreter settings for a server's tail latency (bench/READING.md):

    * `gc.freeze()` once started: what start-up loaded (botocore's service models,
      the config, the imported modules: most of the heap) goes to the permanent
      generation, so a full collection scans only what requests created since —
      one took 22–34 ms before, 1.5 ms after, and every request in flight waited;
    * a 0.5 ms GIL switch interval: the journal reads and SQLite writes of a flush
      run in worker threads, and each time the event loop thread gives up the GIL
      it waited up to the 5 ms default to get it back.
    """
    if not await _started(server):
        return
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(_GIL_SWITCH_INTERVAL)
