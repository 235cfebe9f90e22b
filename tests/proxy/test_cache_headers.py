"""A response-cache hit tells the truth (issue #16, item 10b): it reports the fallback
and mode a fresh request would get now, not those stored with it, and it is not
served from a model the caller's chain no longer picks.

In process (httpx.ASGITransport) with the real admission and quota selector over an
in-memory store; only the upstream is a stand-in that counts its calls.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from adapters import family_of
from adapters.translate import can_translate
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
from proxy.response_cache import CachedResponse
from proxy.whole_body import WholeBodyOperations
from tests.metering.budget_memory import MemoryBudgetStore
from tests.metering.test_quotas import Clock

PRO, LITE = "amazon.nova-pro-v1:0", "amazon.nova-lite-v1:0"
PRICES = {PRO: Price.from_mapping(PRO, {"input": 0.8, "output": 3.2}),
          LITE: Price.from_mapping(LITE, {"input": 0.06, "output": 0.24})}
QUOTA = 10**12  # pico-USD a day on each model ($1)
PATH = f"/model/{PRO}/converse"
QUESTION = {"messages": [{"role": "user", "content": [{"text": "What is 6 times 7?"}]}]}


class _Response:
    #: Whole when it arrives (as a short Converse answer is), or read chunk by chunk.
    body_in_hand = True

    def __init__(self, model: str) -> None:
        self.body = json.dumps({"output": {"message": {"role": "assistant", "content": [{"text": f"42 ({model})"}]}},
                                "stopReason": "end_turn",
                                "usage": {"inputTokens": 9, "outputTokens": 3, "totalTokens": 12}}).encode()
        self.status = 200
        self.raw_headers = ((b"content-type", b"application/json"),
                            (b"content-length", str(len(self.body)).encode()), (b"x-amzn-requestid", b"up-1"))
        self.headers = {k.decode(): v.decode() for k, v in self.raw_headers}

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.body

    def in_hand(self) -> bytes:
        return self.body

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Upstream:
    def __init__(self) -> None:
        self.models: list[str] = []

    async def send(self, method: str, raw_path: str, raw_query: str, headers: Any, body: bytes,
                   region: str | None = None, body_sha256: str | None = None) -> _Response:
        model = raw_path.split("/")[2].replace("%3A", ":")
        self.models.append(model)
        return _Response(model)


class _Recorder:
    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def record(self, event: UsageEvent) -> None:
        self.events.append(event)


class Scene:
    def __init__(self) -> None:
        policies = build_policies(
            models={"premium": PRO, "standard": LITE}, fallback=["premium", "standard"],
            orgs={"acme": {"daily_quota_usd": {"premium": QUOTA / 1e12, "standard": QUOTA / 1e12},
                           "apps": {"app": {"response_cache": {"ttl": 600}}}}},
            quotas=None,
            priced=lambda m: m in PRICES, family_of=family_of, can_translate=can_translate, profiles={},
        )
        self.store = MemoryBudgetStore()
        self.clock = Clock()
        self.selector = selector = QuotaSelector(BudgetLeases(self.store, clock=self.clock))
        self.upstream = _Upstream()
        self.recorder = _Recorder()
        admission = Admission(policies, selector, PriceTable(PRICES), RateLimiter(), clock=self.clock)
        self.handler = ProxyHandler(
            authenticator=Authenticator(AuthConfig(mode="trust", trust_org="acme", trust_app="app"), None),  # type: ignore[arg-type]
            admission=admission,
            upstream=self.upstream,  # type: ignore[arg-type]
            recorder=self.recorder,
            prices=PriceTable(PRICES),
            limits=LimitsConfig(),
            whole_body=WholeBodyOperations(
                upstream=self.upstream, jobs=Jobs(None, UnitPrices({})), admission=admission,  # type: ignore[arg-type]
                recorder=self.recorder, unit_prices=UnitPrices({}), max_body_bytes=1 << 20,
                observe=lambda event, fallback: None,
            ),
        )

    def spend(self, model: str, pico_usd: int) -> None:
        """Other replicas spent `pico_usd` on `model` today, and this process holds no lease
        (as after a restart): the next check reads the store, so a test sets the spend it means."""
        key = ("acme", utc_day(self.clock()), model)
        self.store.committed[key] = pico_usd
        self.store.leases.pop(key, None)
        self.selector._leases = BudgetLeases(self.store, clock=self.clock)  # noqa: SLF001

    def ask(self, path: str = PATH) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.handler)
            async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
                return await client.post(path, json=QUESTION)

        return asyncio.run(go())


def _says(response: httpx.Response) -> tuple[str, str, str, bool]:
    h = response.headers
    return h["x-costkeeper-model-id"], h["x-costkeeper-fallback"], h["x-costkeeper-mode"], "x-costkeeper-cache" in h


def test_a_hit_reports_todays_mode_not_the_stored_one() -> None:
    scene = Scene()
    assert _says(scene.ask()) == (PRO, "false", "NORMAL", False)
    scene.spend(PRO, QUOTA * 95 // 100)  # under a tenth of the quota left: TIGHT
    hit = scene.ask()
    assert _says(hit) == (PRO, "false", "TIGHT", True)  # stored: NORMAL
    assert scene.upstream.models == [PRO]
    assert len([h for h in hit.headers.raw if h[0].lower() == b"x-costkeeper-mode"]) == 1


def test_a_hit_is_not_served_from_a_model_the_chain_left() -> None:
    """Premium's quota is spent: a fresh request goes to the fallback, so does the repeat."""
    scene = Scene()
    first = scene.ask()
    assert _says(first) == (PRO, "false", "NORMAL", False)
    scene.spend(PRO, QUOTA)
    repeat = scene.ask()
    assert _says(repeat) == (LITE, "true", "NORMAL", False)
    assert repeat.json() != first.json()  # the fallback's own answer, not premium's
    assert scene.upstream.models == [PRO, LITE]
    # The fallback's answer is the entry now, served with today's headers.
    again = scene.ask()
    assert _says(again) == (LITE, "true", "NORMAL", True) and again.json() == repeat.json()
    assert scene.upstream.models == [PRO, LITE]
    cached = scene.recorder.events[-1]
    assert cached.cached and cached.model == LITE and cached.cost_pico_usd == 0


def test_a_hit_stored_on_the_fallback_is_not_served_once_the_chain_is_back() -> None:
    """A new UTC day puts premium first again: its answer, not yesterday's fallback's."""
    scene = Scene()
    scene.spend(PRO, QUOTA)
    assert _says(scene.ask()) == (LITE, "true", "NORMAL", False)
    scene.clock.now += 86_400
    assert _says(scene.ask()) == (PRO, "false", "NORMAL", False)
    assert scene.upstream.models == [LITE, PRO]


def test_no_model_left_refuses_even_a_cached_answer() -> None:
    scene = Scene()
    scene.ask()
    scene.spend(PRO, QUOTA)
    scene.spend(LITE, QUOTA)
    refused = scene.ask()
    assert refused.status_code == 400
    assert refused.headers["x-amzn-errortype"].startswith("ServiceQuotaExceededException")


def test_a_profile_request_is_served_and_falls_back_in_its_scope() -> None:
    """`us.` in, `us.` out: the entry's model is the id sent, and so is the choice's."""
    scene = Scene()
    path = f"/model/us.{PRO}/converse"
    assert _says(scene.ask(path)) == (f"us.{PRO}", "false", "NORMAL", False)
    assert _says(scene.ask(path)) == (f"us.{PRO}", "false", "NORMAL", True)
    scene.spend(PRO, QUOTA)
    assert _says(scene.ask(path)) == (f"us.{LITE}", "true", "NORMAL", False)
    assert _says(scene.ask(path)) == (f"us.{LITE}", "true", "NORMAL", True)
    assert scene.upstream.models == [f"us.{PRO}", f"us.{LITE}"]


@pytest.mark.parametrize("in_hand", [True, False])
def test_a_cacheable_answer_is_stored_once(in_hand: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stored before its last byte goes out, and not a second time once it is out
    (a body in hand, and one read chunk by chunk)."""
    scene = Scene()
    monkeypatch.setattr(_Response, "body_in_hand", in_hand)
    stored: list[str] = []
    put = scene.handler._cache.put  # noqa: SLF001

    def counted(key: str, response: CachedResponse) -> None:
        stored.append(key)
        put(key, response)

    monkeypatch.setattr(scene.handler._cache, "put", counted)  # noqa: SLF001
    assert _says(scene.ask()) == (PRO, "false", "NORMAL", False)
    assert len(stored) == 1
    assert _says(scene.ask()) == (PRO, "false", "NORMAL", True)
    assert len(stored) == 1
