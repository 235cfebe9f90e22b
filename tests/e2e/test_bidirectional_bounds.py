"""InvokeModelWithBidirectionalStream's bounds, through a real proxy and the simulator
(issue #19, follow-up): a silent upstream does not hold a stream for ever, a long
stream's usage survives a killed proxy, and a SIGTERM does not wait for a
conversation that may last 8 minutes. Each ends the client's stream with an
exception frame and meters what was seen, flagged estimated, exactly once.

Conversations and helpers are tests/e2e/test_bidirectional_stream.py's.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metering.sqlite_store import SQLiteStore
from metering.store import UsageRow
from proxy.upstream_errors import UpstreamBroken
from tests.conftest import TEST_PRICING
from tests.e2e.bidi_client import Conversation, text_turn
from tests.e2e.clients import wait_for_event
from tests.e2e.test_bidirectional_stream import (
    BIDI,
    SONIC,
    SONIC_RATES,
    WITHIN,
    _answer,
    _last_total,
    talk,
)
from tests.processes import Process, Proxy, start_proxy, wait_for

#: Short enough for a test to wait it out; the simulator answers a turn at once, so only
#: the held stream's silence reaches it.
QUIET_SECONDS = 3
VOICE_CONFIG: dict[str, Any] = {
    "pricing": {**TEST_PRICING, SONIC: SONIC_RATES},
    "orgs": {"acme": {"allowed_operations": [BIDI]}},
}


@pytest.fixture(scope="module")
def quiet_proxy(tmp_path_factory: pytest.TempPathFactory, simulator: Process) -> Iterator[Proxy]:
    proxy = start_proxy(tmp_path_factory.mktemp("bidi-quiet"), simulator.url,
                        {**VOICE_CONFIG, "upstream": {"endpoint_url": simulator.url, "read_timeout": QUIET_SECONDS}})
    yield proxy
    proxy.stop()


def test_a_silent_upstream_is_cut_after_the_read_timeout_and_metered_estimated(quiet_proxy: Proxy) -> None:
    key = quiet_proxy.issue_key("acme", "quiet")

    async def script(conversation: Conversation) -> None:
        await conversation.say(text_turn(conversation.prompt, "Hello [[sim:hold]]"))
        await _answer(conversation)  # then the upstream sends nothing, and keeps the connection
        await conversation.until("\0")  # to the end of the client's stream

    outcome = talk(quiet_proxy, key, script)
    assert [kind for kind, _ in outcome.exceptions] == ["serviceUnavailableException"]
    event = wait_for_event(quiet_proxy, outcome.request_id)
    assert event.estimated and not event.hung_up and event.status == 200
    total = _last_total(outcome)
    assert event.output_tokens == sum(total["output"].values()) > 0
    assert event.input_tokens == sum(total["input"].values())


def test_a_proxy_killed_mid_stream_meters_the_usage_seen_once_at_its_next_start(
        tmp_path: Path, simulator: Process) -> None:
    store_path = tmp_path / "usage.db"
    # Every usage event written down at once: the test kills the proxy right after one.
    config = {**VOICE_CONFIG, "store": {"backend": "sqlite", "path": str(store_path)},
              "metering": {"flush_interval": 0.1, "checkpoint_interval": 0}}
    proxy = start_proxy(tmp_path, simulator.url, config)
    try:
        key = proxy.issue_key("acme", "killed")

        async def script(conversation: Conversation) -> None:
            await conversation.say(text_turn(conversation.prompt, "Hello [[sim:hold]]"))
            await _answer(conversation)  # its usage event is written down before it is relayed
            os.kill(proxy.popen.pid, signal.SIGKILL)
            proxy.popen.wait()
            try:
                await conversation.until("\0")
            except UpstreamBroken:
                pass  # the connection died with the proxy

        outcome = talk(proxy, key, script)
    finally:
        proxy.stop()
    total = _last_total(outcome)
    restarted = start_proxy(tmp_path, simulator.url, config)  # same store, same journal
    try:
        def rows() -> list[UsageRow]:
            async def read() -> list[UsageRow]:
                async with SQLiteStore(str(store_path)) as store:
                    return [row for row in await store.usage_summary(0, None, ["app"]) if row.app == "killed"]
            return asyncio.run(read())

        wait_for(lambda: bool(rows()), 30, "the killed stream's usage in the store")
        (row,) = rows()
        assert (row.requests, row.estimated_requests) == (1, 1)
        assert row.input_tokens == sum(total["input"].values())
        assert row.output_tokens == sum(total["output"].values()) > 0
    finally:
        restarted.stop()
    assert not (store_path.parent / f"{store_path.name}.journal" / "streams").exists()  # replayed, then removed


def test_sigterm_cuts_an_open_stream_after_the_drain_timeout_meters_it_and_exits_zero(
        tmp_path: Path, simulator: Process) -> None:
    """A conversation lasts up to 8 minutes, longer than a pod's grace period: SIGTERM lets
    it go on for `server.stream_drain_timeout`, then ends it with an exception frame, meters
    it and lets the shutdown finish."""
    proxy = start_proxy(tmp_path, simulator.url, {**VOICE_CONFIG, "server": {"stream_drain_timeout": 1}})
    try:
        key = proxy.issue_key("acme", "drained")

        async def script(conversation: Conversation) -> None:
            await conversation.say(text_turn(conversation.prompt, "Hello [[sim:hold]]"))
            await _answer(conversation)  # then the conversation stays open, silent
            proxy.popen.send_signal(signal.SIGTERM)
            await conversation.until("\0")

        outcome = talk(proxy, key, script)
        assert proxy.popen.wait(timeout=WITHIN) == 0, proxy.output()
    finally:
        proxy.stop()
    assert [kind for kind, _ in outcome.exceptions] == ["serviceUnavailableException"]
    assert "shutting down" in outcome.exceptions[0][1]
    event = wait_for_event(proxy, outcome.request_id)  # stored by the shutdown's flush
    assert event.estimated and not event.hung_up and event.status == 200
    assert event.output_tokens == sum(_last_total(outcome)["output"].values()) > 0
