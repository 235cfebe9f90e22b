"""`server.workers: N` — N processes serve one data port; this one supervises them.

Python runs the proxy on one core; N worker processes use N. The supervisor
(`costkeeper serve` itself) binds the data and admin sockets once and starts the
workers (multiprocessing's spawn context, as uvicorn's own supervisor does); each
serves the shared listening socket, and the kernel hands every new connection to
whichever worker accepts it first. Worker 0 also serves the admin port.

    supervisor ── binds data + admin sockets, PROMETHEUS_MULTIPROC_DIR=<fresh tmp dir>
      ├─ worker 0   data + admin   journal <journal_dir>
      ├─ worker 1   data           journal <journal_dir>/worker-1
      └─ …

* Each worker is a whole proxy (proxy/app.py) with its own metering journal,
  which one process owns at a time (metering/journal.py). Before it serves,
  worker 0 stores what workers that no longer run (index ≥ N, after N shrank)
  left in theirs, so changing N between restarts loses nothing.
* Metrics: every worker writes prometheus-client's multiprocess files; worker 0's
  `/metrics` sums them (`ProxyMetrics.aggregate_processes`). The tally of refused
  credentials goes to the same directory, one file a worker (proxy/auth_failures.py).
* SIGTERM/SIGINT to the supervisor: forwarded to every worker, which stops
  accepting, lets its open streams finish and flushes its journal; the supervisor
  exits 0 once all have exited 0. A worker that dies otherwise is started again
  (logged; with a growing delay if it keeps dying within seconds); one that fails
  before it first served stops them all, as a failed start does with one process.
* SIGHUP to the supervisor: passed to every worker, which re-reads config.yaml
  (proxy/admin/reload.py). Each worker also polls the file, so all follow a change.
* A worker whose supervisor is gone (killed) shuts down the same graceful way.

`server.workers: 1` (the default) runs none of this: `costkeeper serve` is the
one process, as it always was (proxy/serve.py), and only recovers retired journals
(proxy/worker_journals.py).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing import connection
from multiprocessing.context import SpawnProcess
from multiprocessing.reduction import ForkingPickler
from types import FrameType, MappingProxyType
from typing import TYPE_CHECKING, Any

from proxy.config import Config
from proxy.serve import configure_logging, loop_factory, serve_async
from proxy.worker_journals import worker_journal_dir

if TYPE_CHECKING:
    import uvicorn

    from proxy.app import CostKeeper

__all__ = ["Worker", "supervise"]

logger = logging.getLogger(__name__)

#: A worker that ran this long before dying is started again at once; one dying sooner,
#: after a delay doubling from _RESTART_DELAY up to _RESTART_DELAY_MAX (a crash loop).
_STABLE_SECONDS = 10.0
_RESTART_DELAY = 0.5
_RESTART_DELAY_MAX = 30.0
#: How often a worker refreshes its backlog gauge and checks its supervisor is alive.
_WATCH_INTERVAL = 1.0


# -- in every worker --------------------------------------------------------


@dataclass
class Worker:
    """What one worker process gets from the supervisor (pickled into it)."""

    index: int
    data_socket: socket.socket
    #: Worker 0 only.
    admin_socket: socket.socket | None
    #: PROMETHEUS_MULTIPROC_DIR, which the process inherited from the supervisor.
    metrics_dir: str
    supervisor_pid: int
    #: Write end of a pipe: one message once the data port serves.
    started: connection.Connection

    def watch(self, keeper: CostKeeper, server: uvicorn.Server, stop: Callable[[], None]) -> asyncio.Task[None]:
        """Report to the supervisor, publish this worker's backlog, and stop if the supervisor dies."""
        keeper.metrics.aggregate_processes(self.metrics_dir)
        keeper.auth_failures.publish_to(self.metrics_dir)
        return asyncio.create_task(self._watch(keeper, server, stop), name=f"costkeeper-worker-{self.index}")

    async def _watch(self, keeper: CostKeeper, server: uvicorn.Server, stop: Callable[[], None]) -> None:
        serving = False
        while True:
            if not serving and server.started:
                serving = True
                self._report_serving()
            # Other workers' gauges are only read from their files: keep this one's fresh.
            keeper.metrics.backlog.set(keeper.recorder.backlog)
            keeper.metrics.inflight_bodies.set(keeper.handler.inflight_body_bytes)
            keeper.auth_failures.publish()  # worker 0's /v1/auth-failures reads every worker's
            if os.getppid() != self.supervisor_pid:
                logger.error("worker %d: the supervisor (pid %d) is gone; shutting down",
                             self.index, self.supervisor_pid)
                stop()
                return
            await asyncio.sleep(_WATCH_INTERVAL if serving else 0.05)

    def _report_serving(self) -> None:
        try:
            self.started.send_bytes(b"serving")
        except OSError:
            pass  # the supervisor is gone: the watch notices
        self.started.close()
        logger.info("worker %d (pid %d) serving", self.index, os.getpid())


def _worker_main(config: Config, worker: Worker) -> None:
    """The worker process: the same serving code as a single process (proxy/serve.py)."""
    # A SIGHUP passed on while this worker starts must not end it; once it serves, its
    # event loop handles SIGHUP, and its first poll reads a file changed meanwhile.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    configure_logging(config)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        code = runner.run(serve_async(config, worker))
    sys.exit(code)


# -- the supervisor -----------------------------------------------------------


def supervise(config: Config) -> int:
    """`costkeeper serve` with `server.workers` > 1: bind, start the workers, keep them
    running until SIGTERM/SIGINT; 0 when every worker exited 0."""
    server = config.server
    try:
        data_socket = _bind(server.host, server.port)
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", server.host, server.port, exc)
        return 1
    try:
        admin_socket = _bind(server.admin_host, server.admin_port)
    except OSError as exc:
        data_socket.close()
        logger.error("cannot listen on %s:%d (admin): %s", server.admin_host, server.admin_port, exc)
        return 1
    # Set before any worker starts, so each imports prometheus_client in multiprocess
    # mode; fresh for each run, as prometheus-client requires.
    metrics_dir = tempfile.mkdtemp(prefix="costkeeper-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # The Config crosses to the workers pickled; its read-only mappings need a reducer.
    ForkingPickler.register(MappingProxyType, _reduce_mapping_proxy)
    scheme = "https" if server.tls_cert else "http"
    host, port = data_socket.getsockname()[:2]
    logger.info("starting %d workers on %s://%s:%d (admin port %d, served by worker 0)",
                server.workers, scheme, host, port, admin_socket.getsockname()[1])
    try:
        return _Supervisor(config, data_socket, admin_socket, metrics_dir).run()
    finally:
        data_socket.close()
        admin_socket.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _bind(host: str, port: int) -> socket.socket:
    """As uvicorn's `Config.bind_socket`: the workers call listen() when they serve."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _mapping_proxy(items: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(items)


def _reduce_mapping_proxy(mapping: MappingProxyType[Any, Any]) -> tuple[Any, ...]:
    return _mapping_proxy, (dict(mapping),)


@dataclass
class _Slot:
    index: int
    process: SpawnProcess | None = None
    #: Read end of the worker's pipe, until it reports that it serves.
    started: connection.Connection | None = None
    serving: bool = False
    #: Served at least once (a worker that never did is a failed start).
    ever_served: bool = False
    since: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None


class _Supervisor:
    def __init__(self, config: Config, data_socket: socket.socket, admin_socket: socket.socket,
                 metrics_dir: str) -> None:
        self._config = config
        self._data_socket = data_socket
        self._admin_socket = admin_socket
        self._metrics_dir = metrics_dir
        self._context = multiprocessing.get_context("spawn")
        self._slots = [_Slot(index) for index in range(config.server.workers)]
        self._signals: list[int] = []
        self._stopping = False
        self._exit_code = 0

    def run(self) -> int:
        wakeup_read, wakeup_write = os.pipe()
        os.set_blocking(wakeup_read, False)
        os.set_blocking(wakeup_write, False)
        previous_wakeup = signal.set_wakeup_fd(wakeup_write)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            for slot in self._slots:
                self._spawn(slot)
            while not self._stopping or any(slot.process is not None for slot in self._slots):
                self._wait(wakeup_read)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_wakeup)
            os.close(wakeup_read)
            os.close(wakeup_write)
        return self._exit_code

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals.append(signum)  # acted on by the loop, which the wakeup fd wakes

    def _wait(self, wakeup: int) -> None:
        now = time.monotonic()
        pending = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
        timeout = max(min(pending) - now, 0.0) if pending else None
        waitables: list[Any] = [wakeup]
        for slot in self._slots:
            if slot.process is not None:
                waitables.append(slot.process.sentinel)
            if slot.started is not None:
                waitables.append(slot.started)
        ready = connection.wait(waitables, timeout)
        if wakeup in ready:
            while True:
                try:
                    if not os.read(wakeup, 512):
                        break
                except BlockingIOError:
                    break
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGHUP:
                self._reload()
                continue
            logger.info("%s: stopping %d workers (open streams finish, journals are flushed)",
                        signal.Signals(signum).name, sum(slot.process is not None for slot in self._slots))
            self._stop()
        for slot in self._slots:
            if slot.started is not None and slot.started in ready:
                self._on_started(slot)
            if slot.process is not None and slot.process.sentinel in ready:
                self._on_exit(slot)
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is not None and slot.restart_at <= now and not self._stopping:
                self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        reader, writer = self._context.Pipe(duplex=False)
        worker = Worker(
            index=slot.index,
            data_socket=self._data_socket,
            admin_socket=self._admin_socket if slot.index == 0 else None,
            metrics_dir=self._metrics_dir,
            supervisor_pid=os.getpid(),
            started=writer,
        )
        config = self._config
        if slot.index:
            store = replace(config.store, journal_dir=worker_journal_dir(config.store.journal_path(), slot.index))
            config = replace(config, store=store)
        process = self._context.Process(target=_worker_main, args=(config, worker),
                                        name=f"costkeeper-worker-{slot.index}")
        process.start()
        writer.close()  # the worker holds the write end: EOF here means it is gone
        slot.process, slot.started, slot.serving = process, reader, False
        slot.since, slot.restart_at = time.monotonic(), None

    def _on_started(self, slot: _Slot) -> None:
        assert slot.started is not None
        try:
            slot.started.recv_bytes()
            slot.serving = slot.ever_served = True
        except (EOFError, OSError):
            pass  # exited before serving: its sentinel tells
        slot.started.close()
        slot.started = None

    def _on_exit(self, slot: _Slot) -> None:
        process = slot.process
        assert process is not None
        process.join()
        code = process.exitcode
        pid = process.pid
        process.close()
        slot.process = None
        if slot.started is not None:
            slot.started.close()
            slot.started = None
        self._forget_live_gauges(pid)
        if self._stopping:
            # One still starting may die of the forwarded signal: it had nothing to flush.
            if code != 0 and slot.serving:
                logger.error("worker %d (pid %s) %s", slot.index, pid, _exit_reason(code))
                self._exit_code = self._exit_code or 1
            return
        if not slot.ever_served:
            logger.error("worker %d (pid %s) %s before it served; stopping the others",
                         slot.index, pid, _exit_reason(code))
            self._exit_code = code if isinstance(code, int) and code > 0 else 1
            self._stop()
            return
        if time.monotonic() - slot.since >= _STABLE_SECONDS:
            slot.quick_deaths = 0
        else:
            slot.quick_deaths += 1
        delay = 0.0 if not slot.quick_deaths else min(
            _RESTART_DELAY * 2 ** (slot.quick_deaths - 1), _RESTART_DELAY_MAX)
        logger.error("worker %d (pid %s) %s; starting it again%s", slot.index, pid, _exit_reason(code),
                     f" in {delay:g} s" if delay else "")
        slot.restart_at = time.monotonic() + delay

    def _reload(self) -> None:
        """Pass SIGHUP to every running worker: each re-reads config.yaml itself."""
        logger.info("SIGHUP: the %d workers re-read the configuration",
                    sum(slot.process is not None for slot in self._slots))
        for slot in self._slots:
            if slot.process is not None and slot.process.pid is not None:
                try:
                    os.kill(slot.process.pid, signal.SIGHUP)
                except ProcessLookupError:
                    pass

    def _stop(self) -> None:
        """Forward SIGTERM to every worker, and let go of the listening sockets so the
        ports refuse connections once the workers have closed theirs."""
        self._stopping = True
        for slot in self._slots:
            slot.restart_at = None
            if slot.process is not None and slot.process.pid is not None:
                try:
                    os.kill(slot.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        self._data_socket.close()
        self._admin_socket.close()

    def _forget_live_gauges(self, pid: int | None) -> None:
        """A dead worker's live gauges (its backlog) no longer count; its counters do."""
        from prometheus_client import multiprocess

        if pid is not None:
            multiprocess.mark_process_dead(pid, self._metrics_dir)


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
