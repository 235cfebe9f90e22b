"""The pool's hand-over (proxy/http1_pool.py): at its limit, a request waits, and a connection
given back passes its slot to the first waiter. On real sockets: a waiter handed the slot
just as it is cancelled, a waiter cancelled while it waits, a connection given back that
cannot carry another request, a waiter whose own connection fails to open; then hypothesis
over interleavings of requests, releases, broken connections, cancellations and steps of
the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.http1_client import ClientError, ConnectError, Connection
from proxy.http1_pool import Pool
from tests.proxy.raw_upstream import OK, Peer, Served, ok, pool_request, raw_upstream
from tests.proxy.test_http1_pool import _BOUND, _pool

#: A request whose body is this is answered with `Connection: close`, then its connection closed.
_CLOSE = b"close"
#: A request whose body is this is answered (keep-alive), then its connection closed.
_DROP = b"drop"


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


async def _answer(peer: Peer) -> None:
    """OK to each request; then the connection closed after a `_CLOSE` or `_DROP` one."""
    while await peer.request() is not None:
        body = peer.requests[-1][1]
        await peer.send(ok(b"{}", "connection: close") if body == _CLOSE else OK)
        if body in (_CLOSE, _DROP):
            peer.writer.close()
            return


async def _held(pool: Pool, url: str, body: bytes = b"{}") -> Connection:
    """A connection whose response was read to its end, not yet given back."""
    connection = await pool_request(pool, url, body)
    while await connection.next_chunk():
        pass
    return connection


async def _queued(pool: Pool, url: str) -> asyncio.Task[Connection]:
    """A request waiting for a slot, behind those already waiting."""
    waiting = len(pool._waiters)
    task = asyncio.create_task(_held(pool, url))
    await asyncio.sleep(0)  # its first step: queued
    assert len(pool._waiters) == waiting + 1 and not task.done()
    return task


def _stale(exc: BaseException | None) -> bool:
    return isinstance(exc, ClientError) and exc.reused and not exc.answered


def _check(pool: Pool, limit: int) -> None:
    """The pool's own counts agree: the slots taken are within the limit and at least the
    connections handed out; no waiter still queued was handed a slot (one cancelled may be
    queued until its request runs again)."""
    assert 0 <= pool._in_use <= limit
    assert len(pool._leased) <= pool._in_use
    assert all(not waiter.done() or waiter.cancelled() for waiter in pool._waiters)


async def _drained(pool: Pool, served: Served) -> None:
    """Nothing is left taken: no slot, no waiter, and one more request is served at once."""
    assert pool._in_use == 0 and not pool._waiters and not pool._leased
    connection = await asyncio.wait_for(_held(pool, served.url), _BOUND)
    connection.release()
    assert pool._in_use == 0


def test_a_waiter_handed_the_slot_as_it_is_cancelled_passes_it_on() -> None:
    """The connection comes back and, before the first waiter runs again, that waiter is
    cancelled (a client hanging up): the slot it was handed goes to the next waiter."""

    async def scenario() -> None:
        pool = _pool(1)
        async with raw_upstream(_answer) as served:
            holder = await _held(pool, served.url)
            first, second = await _queued(pool, served.url), await _queued(pool, served.url)
            holder.release()  # hands the slot to `first` ...
            first.cancel()  # ... which is cancelled before it runs again
            connection = await asyncio.wait_for(second, _BOUND)
            assert first.cancelled()
            _check(pool, 1)
            connection.release()
            await _drained(pool, served)
            assert len(served.peers) == 1  # the connection went from holder to second
            await pool.aclose()

    run(scenario)


@pytest.mark.parametrize("behind", [0, 1], ids=["alone", "another-behind"])
def test_a_waiter_cancelled_just_before_the_connection_comes_back_ends_cancelled(behind: int) -> None:
    """A waiting request is cancelled and, before it runs again, the connection comes back:
    the slot skips it (to the next waiter, or back to the pool) and it ends cancelled. It
    ended in a ValueError: it looked for its place in the queue, which the slot had taken."""

    async def scenario() -> None:
        pool = _pool(1)
        async with raw_upstream(_answer) as served:
            holder = await _held(pool, served.url)
            quitter = await _queued(pool, served.url)
            patient = [await _queued(pool, served.url) for _ in range(behind)]
            quitter.cancel()
            holder.release()
            with pytest.raises(asyncio.CancelledError):
                await quitter
            for task in patient:
                (await asyncio.wait_for(task, _BOUND)).release()
            await _drained(pool, served)
            await pool.aclose()

    run(scenario)


def test_a_waiter_cancelled_while_it_waits_leaks_nothing() -> None:
    """The only waiter cancelled, then the connection given back: its slot is free again,
    not held for the cancelled waiter."""

    async def scenario() -> None:
        pool = _pool(1)
        async with raw_upstream(_answer) as served:
            holder = await _held(pool, served.url)
            waiter = await _queued(pool, served.url)
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            assert not pool._waiters and pool._in_use == 1
            holder.release()
            await _drained(pool, served)
            await pool.aclose()

    run(scenario)


@pytest.mark.parametrize("how", ["connection-close", "closed-after-answering", "abandoned"])
def test_a_waiter_handed_a_connection_that_cannot_carry_another_request_gets_a_fresh_one(how: str) -> None:
    """What comes back cannot be reused — the upstream ended it (`Connection: close`), or
    closed it after answering, or it was abandoned: the waiter is served on a new connection."""

    async def scenario() -> None:
        pool = _pool(1)
        async with raw_upstream(_answer) as served:
            body = {"connection-close": _CLOSE, "closed-after-answering": _DROP}.get(how, b"{}")
            holder = await _held(pool, served.url, body)
            lost = _lost(holder)
            waiter = await _queued(pool, served.url)
            if how == "closed-after-answering":
                await asyncio.wait_for(lost, _BOUND)  # the upstream's close has reached it
            if how == "abandoned":
                holder.close()
            else:
                holder.release()
            connection = await asyncio.wait_for(waiter, _BOUND)
            assert len(served.peers) == 2 and connection is not holder
            _check(pool, 1)
            connection.release()
            await _drained(pool, served)
            await pool.aclose()

    run(scenario)


def _lost(connection: Connection) -> asyncio.Future[None]:
    """Done when `connection`'s socket is closed (its `connection_lost`)."""
    lost = asyncio.get_running_loop().create_future()
    connection_lost = connection.connection_lost

    def spy(exc: Exception | None) -> None:
        connection_lost(exc)
        if not lost.done():
            lost.set_result(None)

    connection.connection_lost = spy  # type: ignore[method-assign]
    return lost


def test_a_waiter_whose_connection_fails_to_open_passes_the_slot_on() -> None:
    """The first waiter's endpoint refuses the connection: it fails, and the slot goes on to
    the next waiter, which is served."""

    async def scenario() -> None:
        async with raw_upstream(_answer) as gone:
            refused = gone.url
        pool = _pool(1)
        async with raw_upstream(_answer) as served:
            holder = await _held(pool, served.url)
            doomed, patient = await _queued(pool, refused), await _queued(pool, served.url)
            holder.release()
            with pytest.raises(ConnectError):
                await asyncio.wait_for(doomed, _BOUND)
            connection = await asyncio.wait_for(patient, _BOUND)
            connection.release()
            await _drained(pool, served)
            await pool.aclose()

    run(scenario)


# --- interleavings ------------------------------------------------------------------------

_OPS = st.lists(st.one_of(
    # A new request: its body `_BODIES[arg % 3]`; arg >= 3: awaited until served when a slot is free.
    st.tuples(st.just("request"), st.integers(0, 5)),
    st.tuples(st.just("release"), st.integers(0, 7)),  # a held connection given back
    st.tuples(st.just("abandon"), st.integers(0, 7)),  # a held connection closed (a hang-up mid-body)
    st.tuples(st.just("cancel"), st.integers(0, 7)),  # a request cancelled, wherever it is
    st.tuples(st.just("step"), st.integers(1, 3)),  # the event loop runs a little
), max_size=30)
_BODIES = (b"{}", _CLOSE, _DROP)


@settings(max_examples=60, deadline=None)
@example(1, [("request", 3), ("request", 0), ("request", 0), ("step", 1), ("release", 0), ("cancel", 1)])
@example(1, [("request", 3), ("request", 0), ("request", 0), ("step", 1), ("cancel", 1), ("release", 0)])
@given(st.integers(1, 2), _OPS)
def test_any_interleaving_keeps_the_limit_leaks_nothing_and_serves_every_waiter(
        limit: int, ops: list[tuple[str, int]]) -> None:
    """Whatever the order: never more than `limit` slots taken, every request not cancelled
    is served once the connections held are given back, and nothing stays taken."""

    async def scenario() -> None:
        pool = _pool(limit)
        async with raw_upstream(_answer) as served:
            tasks: list[asyncio.Task[Connection]] = []
            ended: set[int] = set()  # requests whose connection was given back or closed

            def held(index: int) -> Connection | None:
                """The connection request `index` holds, if it was served and still holds it."""
                task = tasks[index]
                if index in ended or not task.done() or task.cancelled() or task.exception() is not None:
                    return None
                return task.result()

            for op, arg in ops:
                if op == "request":
                    if arg >= 3:
                        await asyncio.sleep(0)  # the requests made so far take a slot or queue
                    free = pool._in_use < limit and not pool._waiters
                    tasks.append(asyncio.create_task(_held(pool, served.url, _BODIES[arg % 3])))
                    if arg >= 3 and free:
                        await asyncio.wait(tasks[-1:], timeout=_BOUND)
                        assert tasks[-1].done(), "a request with a slot free was not served"
                elif op in ("release", "abandon") and tasks and (connection := held(arg % len(tasks))) is not None:
                    ended.add(arg % len(tasks))
                    if op == "release":
                        connection.release()
                    else:
                        connection.close()
                elif op == "cancel" and tasks:
                    tasks[arg % len(tasks)].cancel()
                elif op == "step":
                    for _ in range(arg):
                        await asyncio.sleep(0)
                _check(pool, limit)
            # Then each connection held is given back, and so each waiting request served.
            while True:
                for index in range(len(tasks)):
                    if (connection := held(index)) is not None:
                        ended.add(index)
                        connection.release()
                _check(pool, limit)
                if not (waiting := [task for task in tasks if not task.done()]):
                    break
                done, _ = await asyncio.wait(waiting, timeout=_BOUND, return_when=asyncio.FIRST_COMPLETED)
                assert done, "a waiting request was never served"
            for index, task in enumerate(tasks):
                # Served, unless cancelled first (a cancel after the answer leaves it served).
                # Served may be on a pooled connection the upstream had just dropped (`_DROP`):
                # that request fails unanswered on a reused connection, and proxy/upstream.py
                # sends it again (tests/proxy/test_upstream_retry.py).
                assert task.cancelled() or (index in ended) or _stale(task.exception())
            assert pool.idle <= limit
            await _drained(pool, served)
            await pool.aclose()

    run(scenario)
