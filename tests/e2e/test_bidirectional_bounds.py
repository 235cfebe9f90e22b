"""InvokeModelWithBidirectionalStream's bounds, through a real proxy and the simulator
(issue #19, follow-up): a silent upstream does not hold a stream for ever, a long
stream's usage survives a killed proxy, and a SIGTERM does not wait for a
conversation that may last 8 minutes. Each ends the client's stream with an
exception frame and meters what was seen, flagged estimated, exactly once.

Conversations and helpers are tests/e2e/test_bidirectional_stream.py's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import TEST_PRICING
from tests.e2e.bidi_client import Conversation, text_turn
from tests.e2e.clients import wait_for_event
from tests.e2e.test_bidirectional_stream import BIDI, SONIC, SONIC_RATES, _answer, _last_total, talk
from tests.processes import Process, Proxy, start_proxy

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
