"""A deterministic simulation of the quota allocator: many replicas, one store, virtual time.

Each virtual replica runs the real `BudgetLeases` and `QuotaSelector` (metering/leases.py,
metering/quotas.py) with its own skewed clock, a journal flushed to the store every
second (batches applied once per id, as the recorder does), bursts of requests of random
worst cases, costs and durations, crashes (in-flight requests die unmetered, the journal
is replayed by the next process), and store outages (calls fail, some after they were
applied: a lost answer). The store is `MemoryBudgetStore`, which keeps the contract the
real stores keep (test_budget_contract.py), with latency on every call.

Time is virtual: the event loop's selector advances the clock by the timeout it is given
instead of sleeping, so an hour of traffic runs in milliseconds and the same scenario
always runs the same way.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import random
import selectors
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from metering.aggregate import Aggregate
from metering.budget import LeaseRecord, ScopeBudget
from metering.events import UsageEvent, utc_day
from metering.leases import BudgetLeases
from metering.quotas import QuotaExhausted, QuotaSelector, QuotaUnavailable
from tests.metering.budget_memory import MemoryBudgetStore

EPOCH = float(calendar.timegm((2026, 11, 18, 9, 0, 0)))
SCOPE = "acme"
CAPPED, FALLBACK = "capped-model", "fallback-model"
CHAIN = (CAPPED, FALLBACK)


class VirtualClock:
    """Seconds since the simulation began (small numbers keep float steps exact);
    `wall()` is the epoch time the replicas see."""

    def __init__(self) -> None:
        self.now = 0.0

    def wall(self) -> float:
        return EPOCH + self.now


class _VirtualSelector(selectors.BaseSelector):
    """Nothing is ever readable: `select` only moves the clock to the next timer."""

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        self._keys: dict[Any, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, fileobj if isinstance(fileobj, int) else fileobj.fileno(), events, data)
        self._keys[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeError("simulation deadlock: nothing scheduled and nothing ready")
        self._clock.now += timeout
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._keys


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        super().__init__(_VirtualSelector(clock))
        self._clock_resolution = 1e-6

    def time(self) -> float:
        return self.clock.now


@dataclass(frozen=True)
class Burst:
    at: float
    replica: int
    count: int
    #: Worst cases are drawn from [worst_low, worst_high].
    worst_low: int
    worst_high: int
    #: Request durations are drawn from [0, longest] seconds.
    longest: float


@dataclass(frozen=True)
class Crash:
    at: float
    replica: int
    #: Seconds until a new process replays the journal; None: never.
    down_for: float | None


@dataclass(frozen=True)
class Outage:
    at: float
    length: float
    #: Replicas that cannot reach the store; empty: all of them.
    replicas: frozenset[int]


@dataclass(frozen=True)
class Scenario:
    seed: int
    replicas: int
    quota: int
    bursts: Sequence[Burst]
    crashes: Sequence[Crash] = ()
    outages: Sequence[Outage] = ()
    ttl: float = 30.0
    latency: tuple[float, float] = (0.001, 0.02)
    #: Share of requests whose cost exceeds their worst case (an input bound that was too low).
    underestimated: float = 0.0
    #: Share of requests that fail upstream (cost 0).
    failing: float = 0.1
    #: Each replica's clock is off by up to this (seconds); must stay under ttl / 6.
    skew: float = 0.0
    fail_closed: bool = False
    #: Share of store calls in an outage that are applied but answered with an error.
    lost_answers: float = 0.3


@dataclass
class Outcome:
    """What happened, from outside the allocator."""

    #: Cost of everything the capped model served, metered or not (what AWS bills).
    true_spend: int = 0
    #: Σ max(0, cost − worst case) of the requests served on the capped model.
    shortfall: int = 0
    #: Served without budget (store unreachable, fail-open).
    unchecked: int = 0
    #: Cost of every usage event journaled (stored once every journal is replayed).
    metered: int = 0
    #: Σ over reclaimed leases of what their holder still had in flight or unflushed.
    reclaimed_busy: int = 0
    served: int = 0
    fell_back: int = 0
    refused: int = 0
    unavailable: int = 0
    #: Spent (settled) when the model was marked exhausted, each time it was marked.
    spent_at_marks: list[int] = field(default_factory=list)
    lease_writes: int = 0
    final: ScopeBudget = field(default_factory=ScopeBudget)
    replayed_all: bool = True


class World:
    def __init__(self, scenario: Scenario, clock: VirtualClock) -> None:
        self.scenario = scenario
        self.clock = clock
        self.rng = random.Random(scenario.seed)
        self.store = MemoryBudgetStore()
        self.outcome = Outcome()
        self.replicas: list[Replica | None] = [None] * scenario.replicas
        #: Every process ever started, dead ones included (their leases' state at death).
        self.processes: list[Replica] = []

    def quota_of(self, model: str) -> tuple[str, int] | None:
        return (CAPPED, self.scenario.quota) if model == CAPPED else None

    def unreachable(self, replica: int) -> bool:
        now = self.clock.now
        return any(o.at <= now < o.at + o.length and (not o.replicas or replica in o.replicas)
                   for o in self.scenario.outages)

    def busy(self, holder: str) -> int:
        """What `holder` still holds for requests in flight or usage not yet stored."""
        for process in self.processes:
            amount = process.busy(holder)
            if amount is not None:
                return amount
        return 0


class SimStore:
    """One replica's connection to the shared store: latency, outages, lost answers."""

    def __init__(self, world: World, replica: int) -> None:
        self._world = world
        self._replica = replica

    async def _call(self, apply: Callable[[], Any]) -> Any:
        low, high = self._world.scenario.latency
        await asyncio.sleep(self._world.rng.uniform(low, high))
        if self._world.unreachable(self._replica):
            if self._world.rng.random() < self._world.scenario.lost_answers:
                await apply()  # it landed, the answer did not
            raise ConnectionError("store unreachable (simulated)")
        result = await apply()
        await asyncio.sleep(self._world.rng.uniform(low, high))
        return result

    async def read_budget(self, scope: str, day: str) -> ScopeBudget:
        return await self._call(lambda: self._world.store.read_budget(scope, day))  # type: ignore[no-any-return]

    async def claim_lease(self, *args: Any) -> tuple[bool, ScopeBudget]:
        return await self._call(lambda: self._world.store.claim_lease(*args))  # type: ignore[no-any-return]

    async def renew_lease(self, *args: Any, drop: bool = False) -> bool:
        return await self._call(lambda: self._world.store.renew_lease(*args, drop=drop))  # type: ignore[no-any-return]

    async def reclaim_leases(self, scope: str, day: str, model: str, expired: Mapping[str, LeaseRecord]) -> bool:
        async def reclaim() -> bool:
            current = self._world.store.leases.get((scope, day, model), {})
            unchanged = all(current.get(holder) == lease for holder, lease in expired.items())
            if unchanged:
                self._world.outcome.reclaimed_busy += sum(
                    min(lease.amount, self._world.busy(holder)) for holder, lease in expired.items() if lease.amount > 0)
            return await self._world.store.reclaim_leases(scope, day, model, expired)
        return await self._call(reclaim)  # type: ignore[no-any-return]

    async def exhausted_models(self, scope: str, day: str) -> frozenset[str]:
        return await self._call(lambda: self._world.store.exhausted_models(scope, day))  # type: ignore[no-any-return]

    async def mark_exhausted(self, scope: str, day: str, model: str) -> None:
        async def mark() -> None:
            self._world.outcome.spent_at_marks.append(self._world.store.budget(scope, day).model(model).spent)
            await self._world.store.mark_exhausted(scope, day, model)
        await self._call(mark)

    async def write_batch(self, batch_id: str, events: Sequence[UsageEvent]) -> bool:
        return await self._call(lambda: self._world.store.write_batch(batch_id, events))  # type: ignore[no-any-return]


class Replica:
    """One process: its allocator, its in-flight requests, its journal and flush loop."""

    def __init__(self, world: World, index: int, journal: list[list[UsageEvent]], generation: int) -> None:
        self.world = world
        self.index = index
        self.store = SimStore(world, index)
        skew = world.rng.uniform(-world.scenario.skew, world.scenario.skew)
        self.leases = BudgetLeases(self.store, ttl=world.scenario.ttl, clock=lambda: world.clock.wall() + skew,
                                   process_id=f"r{index}g{generation}", on_write=self._count_write)
        self.selector = QuotaSelector(self.leases)
        #: Sealed batches not yet stored (a batch keeps its id across retries), then the open one.
        self.journal = journal
        self.open: list[UsageEvent] = []
        #: Insertion-ordered (a set would cancel them in address order, so the same Scenario
        #: could draw its random numbers in another order from one run to the next).
        self.tasks: dict[asyncio.Task[Any], None] = {}
        self.alive = True
        self.dead_busy: dict[str, int] = {}
        self.batch = 0

    def _count_write(self, kind: str) -> None:
        self.world.outcome.lease_writes += 1

    def start(self) -> None:
        self._spawn(self._tick())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks[task] = None
        task.add_done_callback(lambda done: self.tasks.pop(done, None))

    async def _tick(self) -> None:
        """Once a second, as the recorder's flush and the allocator's upkeep run."""
        while True:
            await asyncio.sleep(1.0)
            await self.flush()
            with contextlib.suppress(Exception):
                await self.leases.maintain()

    async def flush(self) -> bool:
        if self.open:
            self.journal.append(self.open)
            self.open = []
        while self.journal:
            events = self.journal[0]
            batch_id = f"{events[0].request_id}…{events[-1].request_id}"
            try:
                await self.store.write_batch(batch_id, events)
            except ConnectionError:
                return False
            if self.journal and self.journal[0] is events:
                self.journal.pop(0)
            if self.alive:
                self.leases.on_stored(Aggregate(events).settled)
        return True

    def busy(self, holder: str) -> int | None:
        if holder in self.dead_busy:
            unstored = sum(e.reserved_pico_usd for batch in self.journal for e in batch if e.lease == holder)
            return self.dead_busy[holder] + unstored
        return self.leases.busy(holder) if self.alive else None

    def request(self, worst: int, cost: int, duration: float, number: int) -> None:
        self._spawn(self._request(worst, cost, duration, number))

    async def _request(self, worst: int, cost: int, duration: float, number: int) -> None:
        outcome = self.world.outcome
        now = self.world.clock.wall()
        try:
            selection = await self.selector.select(SCOPE, utc_day(now), CHAIN, self.world.quota_of,
                                                   lambda model: worst, fail_closed=self.world.scenario.fail_closed)
        except QuotaExhausted:
            outcome.refused += 1
            return
        except QuotaUnavailable:
            outcome.unavailable += 1
            return
        if selection.model != CAPPED:
            outcome.fell_back += 1
            return
        grant = selection.grant
        assert grant is not None
        try:
            await asyncio.sleep(duration)
        except asyncio.CancelledError:
            # The process died mid-request: Bedrock bills what it generated; nothing meters it.
            partial = self.world.rng.randint(0, cost)
            outcome.true_spend += partial
            # An input bound that was too low overshoots here too: the bound allows it.
            outcome.shortfall += max(0, partial - worst)
            if selection.unchecked:
                outcome.unchecked += partial
            raise
        outcome.served += 1
        outcome.true_spend += cost
        outcome.shortfall += max(0, cost - worst)
        if selection.unchecked:
            outcome.unchecked += cost
            reserved, lease = 0, ""
        else:
            reserved, lease = self.leases.settle(grant, cost), grant.holder
        outcome.metered += cost
        self.open.append(UsageEvent(
            request_id=f"r{self.index}-{number}", timestamp=now, org=SCOPE, app="app", operation="Converse",
            requested_model=CAPPED, model=CAPPED, input_tokens=0, output_tokens=0, cache_read_tokens=0,
            cache_write_tokens=0, cost_pico_usd=cost, priced=True, latency_ms=0.0, first_byte_ms=None,
            status=200 if cost else 500, estimated=False, quota_scope=SCOPE, quota_model=CAPPED,
            reserved_pico_usd=reserved, lease=lease,
        ))

    async def crash(self) -> None:
        """SIGKILL: every task stops where it is; the journal (sealed and open) survives."""
        self.alive = False
        for lease_holder, busy in self.leases.busy_holders().items():
            self.dead_busy[lease_holder] = busy - sum(
                e.reserved_pico_usd for batch in self.journal for e in batch if e.lease == lease_holder)
        if self.open:
            self.journal.append(self.open)
            self.open = []
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def simulate(scenario: Scenario, clock: VirtualClock) -> Outcome:
    world = World(scenario, clock)
    rng = world.rng
    journals: list[list[list[UsageEvent]]] = [[] for _ in range(scenario.replicas)]
    generations = [0] * scenario.replicas

    def start(index: int) -> None:
        generations[index] += 1
        replica = Replica(world, index, journals[index], generations[index])
        world.replicas[index] = replica
        world.processes.append(replica)
        replica.start()

    for index in range(scenario.replicas):
        start(index)
    events: list[tuple[float, int, Callable[[], Any]]] = []
    number = 0
    for burst in scenario.bursts:
        for _ in range(burst.count):
            number += 1
            worst = rng.randint(burst.worst_low, burst.worst_high)
            if rng.random() < scenario.failing:
                cost = 0
            elif rng.random() < scenario.underestimated:
                cost = worst + rng.randint(1, max(1, worst // 2))
            else:
                cost = rng.randint(0, worst)
            duration = rng.uniform(0, burst.longest)
            events.append((burst.at + rng.uniform(0, 0.05), number,
                           _requester(world, burst.replica % scenario.replicas, worst, cost, duration, number)))
    for crash in scenario.crashes:
        events.append((crash.at, 0, _crasher(world, crash, start)))
    events.sort(key=lambda item: (item[0], item[1]))
    for at, _, action in events:
        delay = at - clock.now
        if delay > 0:
            await asyncio.sleep(delay)
        await action()
    # Quiesce: every request ends, every journal is stored, every process shuts down, and
    # the leases left behind (dead processes') expire and are reclaimed.
    end = max([o.at + o.length for o in scenario.outages]
              + [c.at + c.down_for for c in scenario.crashes if c.down_for is not None] + [clock.now]) + 1
    await asyncio.sleep(max(0.0, end - clock.now))
    requests = [t for r in world.replicas if r is not None for t in r.tasks if t.get_coro().__name__ == "_request"]
    await asyncio.gather(*requests, return_exceptions=True)
    for index, replica in enumerate(world.replicas):
        if replica is None:
            if journals[index]:
                world.outcome.replayed_all = False
            continue
        for _ in range(100):
            if await replica.flush():
                break
            await asyncio.sleep(1.0)
        for task in list(replica.tasks):
            task.cancel()
        await asyncio.gather(*replica.tasks, return_exceptions=True)
        await replica.leases.close()
    await asyncio.sleep(scenario.ttl + scenario.skew + 1)
    budget = world.store.budget(SCOPE, utc_day(EPOCH)).model(CAPPED)
    if budget.expired(clock.wall()):
        await SimStore(world, -1).reclaim_leases(SCOPE, utc_day(EPOCH), CAPPED, budget.expired(clock.wall()))
    world.outcome.final = world.store.budget(SCOPE, utc_day(EPOCH))
    return world.outcome


def _requester(world: World, index: int, worst: int, cost: int, duration: float,
               number: int) -> Callable[[], Any]:
    async def act() -> None:
        replica = world.replicas[index]
        if replica is not None:
            replica.request(worst, cost, duration, number)
    return act


def _crasher(world: World, crash: Crash, start: Callable[[int], None]) -> Callable[[], Any]:
    async def act() -> None:
        index = crash.replica % world.scenario.replicas
        replica = world.replicas[index]
        if replica is None:
            return
        await replica.crash()
        world.replicas[index] = None
        if crash.down_for is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(crash.down_for, lambda: start(index) if world.replicas[index] is None else None)
    return act


def run(scenario: Scenario) -> Outcome:
    clock = VirtualClock()
    loop = VirtualLoop(clock)
    try:
        return loop.run_until_complete(simulate(scenario, clock))
    finally:
        loop.close()
