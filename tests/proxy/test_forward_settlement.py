"""What the data-port handler settles against the quota: the request's day is its admission's
(issue #18 item 9), and a failure before the upstream call records the request and gives
its worst case back (item 10). The handler runs in process with a stand-in upstream."""

from __future__ import annotations

import asyncio
import calendar
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from adapters import family_of
from adapters.translate import can_translate
from adapters.usage import Usage
from metering.events import UsageEvent, utc_day
from metering.leases import BudgetLeases
from metering.pricing import Price, PriceTable
from metering.quotas import QuotaSelector
from metering.unit_prices import UnitPrices
from proxy.admission import Admission
from proxy.config import AuthConfig, LimitsConfig
from proxy.forward import ProxyHandler
from proxy.identity import Authenticator
from proxy.jobs import Jobs
from proxy.policy_build import build_policies
from proxy.ratelimit import RateLimiter
from proxy.whole_body import WholeBodyOperations
from tests.metering.test_quotas import CountingStore

NOVA = "amazon.nova-pro-v1:0"
PRICES = {NOVA: Price.from_mapping(NOVA, {"input": 0.8, "output": 3.2})}
#: One second before midnight UTC, 2026-11-18.
BEFORE_MIDNIGHT = float(calendar.timegm((2026, 11, 18, 23, 59, 59)))
BODY = json.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}],
                   "inferenceConfig": {"maxTokens": 10}}).encode()


class Recorder:
    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def record(self, event: UsageEvent) -> None:
        self.events.append(event)


class Response:
    """An upstream Converse answer, as UpstreamResponse gives it."""

    status = 200
    #: All of it arrived with the head (the relay watches for no hang-up then).
    body_in_hand = True

    def __init__(self) -> None:
        payload = json.dumps({"output": {"message": {"role": "assistant", "content": [{"text": "hello"}]}},
                              "stopReason": "end_turn", "usage": {"inputTokens": 5, "outputTokens": 2,
                                                                  "totalTokens": 7}}).encode()
        self.body = payload
        self.headers = {"content-type": "application/json", "content-length": str(len(payload)),
                        "x-amzn-requestid": "upstream-1"}
        self.raw_headers = tuple((k.encode(), v.encode()) for k, v in self.headers.items())

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.body

    def in_hand(self) -> bytes:
        return self.body

    async def read(self) -> bytes:
        return self.body

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class Upstream:
    def __init__(self, failure: BaseException | None = None, clock: list[float] | None = None) -> None:
        self._failure = failure
        self._clock = clock

    async def send(self, *args: Any) -> Response:
        if self._clock is not None:
            self._clock[0] += 2  # the request runs across midnight
        if self._failure is not None:
            raise self._failure
        return Response()


class CountingPrices(PriceTable):
    """Counts how often the usage of the stand-in's answer (5 in, 2 out) is priced."""

    def __init__(self) -> None:
        super().__init__(PRICES)
        self.answers_priced = 0

    def cost_pico_usd(self, model_id: str, usage: Usage) -> int | None:
        if (usage.input_tokens, usage.output_tokens) == (5, 2):
            self.answers_priced += 1
        return super().cost_pico_usd(model_id, usage)


def _handler(upstream: Upstream, clock: list[float], prices: PriceTable | None = None,
             limits: LimitsConfig | None = None) -> tuple[ProxyHandler, Recorder, BudgetLeases]:
    policies = build_policies(
        models={"premium": NOVA}, fallback=["premium"], quotas=None,
        orgs={"acme": {"daily_quota_usd": {"premium": 1}}},
        priced=lambda m: m in PRICES, family_of=family_of, can_translate=can_translate,
    )
    prices = prices or PriceTable(PRICES)
    leases = BudgetLeases(CountingStore(), clock=lambda: clock[0])
    admission = Admission(policies, QuotaSelector(leases), prices, RateLimiter(), clock=lambda: clock[0])
    recorder = Recorder()
    handler = ProxyHandler(
        authenticator=Authenticator(AuthConfig(mode="trust", trust_org="acme", trust_app="app"), None),  # type: ignore[arg-type]
        admission=admission, upstream=upstream, recorder=recorder, prices=prices,  # type: ignore[arg-type]
        limits=limits or LimitsConfig(),
        whole_body=WholeBodyOperations(
            upstream=upstream, jobs=Jobs(None, UnitPrices({})), admission=admission,  # type: ignore[arg-type]
            recorder=recorder, unit_prices=UnitPrices({}), max_body_bytes=1 << 20,
            observe=lambda event, fallback: None,
        ),
    )
    return handler, recorder, leases


def _call(handler: ProxyHandler) -> list[dict[str, Any]]:
    scope, receive, send, sent = _exchange()
    asyncio.run(handler(scope, receive, send))
    return sent


def _exchange() -> tuple[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]],
                         Callable[[dict[str, Any]], Awaitable[None]], list[dict[str, Any]]]:
    """An ASGI Converse request with `BODY`: its scope, receive and send, and what was sent."""
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "POST", "path": f"/model/{NOVA}/converse",
             "raw_path": f"/model/{NOVA}/converse".encode(), "query_string": b"",
             "headers": [(b"host", b"localhost"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(BODY)).encode())]}
    messages = [{"type": "http.request", "body": BODY, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return scope, receive, send, sent


def test_a_request_across_midnight_is_settled_on_the_day_it_was_admitted() -> None:
    clock = [BEFORE_MIDNIGHT]
    handler, recorder, leases = _handler(Upstream(clock=clock), clock)
    sent = _call(handler)
    assert sent[0]["status"] == 200
    [event] = recorder.events
    assert utc_day(clock[0]) != "2026-11-18"  # it ended the next day…
    assert event.timestamp == BEFORE_MIDNIGHT and event.day == "2026-11-18"  # …and counts on its first
    assert event.reserved_pico_usd == event.cost_pico_usd > 0 and event.lease
    assert leases.busy(event.lease) == event.reserved_pico_usd  # settled on the lease it was admitted on
    assert all(key[1] == "2026-11-18" for key in leases.held())


def test_a_request_on_a_lease_is_priced_once_for_its_settlement_and_its_event() -> None:
    """Issue #20: the lease is settled with the cost the usage event carries, not a second
    pricing of the same usage."""
    clock = [BEFORE_MIDNIGHT - 3600]
    prices = CountingPrices()
    handler, recorder, leases = _handler(Upstream(), clock, prices)
    assert _call(handler)[0]["status"] == 200
    [event] = recorder.events
    assert event.lease and event.reserved_pico_usd == event.cost_pico_usd > 0
    assert leases.busy(event.lease) == event.cost_pico_usd
    assert prices.answers_priced == 1


def test_a_failure_before_the_upstream_call_records_the_request_and_gives_its_worst_case_back() -> None:
    """Issue #18 item 10: a credential refresh that fails inside the upstream send used to leave
    a 500 with no usage event and the reservation held; three such calls exhausted the quota."""
    clock = [BEFORE_MIDNIGHT - 3600]
    handler, recorder, leases = _handler(Upstream(RuntimeError("could not refresh the credentials")), clock)
    for _ in range(3):
        sent = _call(handler)
        assert sent[0]["status"] == 500
        assert (b"x-amzn-errortype", b"InternalServerException") in [
            (name.lower(), value.split(b":")[0]) for name, value in sent[0]["headers"]]
    assert [event.status for event in recorder.events] == [500, 500, 500]
    assert all(event.cost_pico_usd == event.reserved_pico_usd == 0 for event in recorder.events)
    assert sum(inflight for _, inflight in leases.held().values()) == 0


class _Stalled(Response):
    """Its head came, its body never does."""

    body_in_hand = False

    async def chunks(self) -> AsyncIterator[bytes]:
        await asyncio.Event().wait()
        yield b""


class _StalledUpstream(Upstream):
    async def send(self, *args: Any) -> Response:
        return _Stalled()


def _call_and_hang_up(handler: ProxyHandler) -> list[dict[str, Any]]:
    """The client sends its request, then is gone."""
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "POST", "path": f"/model/{NOVA}/converse",
             "raw_path": f"/model/{NOVA}/converse".encode(), "query_string": b"",
             "headers": [(b"host", b"localhost"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(BODY)).encode())]}
    messages = [{"type": "http.request", "body": BODY, "more_body": False}, {"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(handler(scope, receive, send))
    return sent


def test_a_body_in_hand_is_relayed_and_metered_whole_when_the_client_hangs_up() -> None:
    """Issue #20: a body that arrived whole with its head is sent without a hang-up watch
    (a task per request); a client gone meanwhile changes nothing: Bedrock's own count."""
    clock = [BEFORE_MIDNIGHT - 3600]
    handler, recorder, _ = _handler(Upstream(), clock)
    sent = _call_and_hang_up(handler)
    assert sent[0]["status"] == 200 and sent[-1]["more_body"] is False
    [event] = recorder.events
    assert (event.input_tokens, event.output_tokens, event.estimated) == (5, 2, False)


def test_a_body_still_coming_is_cut_short_when_the_client_hangs_up() -> None:
    """Not in hand, the body is still watched: the client's hang-up ends the wait on Bedrock,
    and the request is estimated and flagged as hung up."""
    clock = [BEFORE_MIDNIGHT - 3600]
    handler, recorder, _ = _handler(_StalledUpstream(), clock, limits=LimitsConfig(hangup_tail_seconds=0.05))
    sent = _call_and_hang_up(handler)
    assert sent[0]["status"] == 200
    [event] = recorder.events
    assert event.hung_up and event.estimated
