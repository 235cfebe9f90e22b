"""InvokeModelWithBidirectionalStream through a real proxy and the simulator, over HTTP/2
(issue #19 item 3): both directions relayed as they come, every input event re-signed
(the simulator checks the proxy's chain as Bedrock does), usage metered exactly from
Nova Sonic's usage events, an end before the last one flagged estimated, fallback only
to another bidirectional model.

The client is tests/e2e/bidi_client.py: botocore's SigV4 for the head, signed envelopes
for the events, HTTP/2 (h2); the Node SDK test runs the AWS SDK for JavaScript.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from adapters.bidi import HTTP2_ONLY, NOT_BIDI_MODEL
from tests.conftest import TEST_PRICING
from tests.e2e.bidi_client import Conversation, Outcome, opened, speech_turn, text_turn
from tests.e2e.clients import wait_for_event
from tests.processes import SIM_ACCESS_KEY, SIM_SECRET_KEY, Process, Proxy, start_proxy

SONIC, SONIC2, LITE = "amazon.nova-sonic-v1:0", "amazon.nova-2-sonic-v1:0", "amazon.nova-lite-v1:0"
SONIC_RATES = {"input": 0.06, "output": 0.24, "speech_input": 3.4, "speech_output": 13.6}
BIDI = "InvokeModelWithBidirectionalStream"
MAX_EVENT_BYTES = 64 * 1024
#: Bounds a hung test, not a speed claim: every step waits on the other side's answer.
WITHIN = 60


@pytest.fixture(scope="module")
def voice_proxy(tmp_path_factory: pytest.TempPathFactory, simulator: Process) -> Iterator[Proxy]:
    config = {
        "pricing": {**TEST_PRICING, SONIC: SONIC_RATES, SONIC2: SONIC_RATES},
        "models": {"voice": SONIC, "voice2": SONIC2},
        "limits": {"max_body_bytes": MAX_EVENT_BYTES},
        "attribution": {"request_metadata_keys": ["project"]},
        "orgs": {
            "acme": {"allowed_operations": [BIDI, "Converse"], "fallback": ["voice", "voice2"]},
            "spent": {"allowed_operations": [BIDI], "fallback": ["voice", "voice2"],
                      "daily_quota_usd": {"voice": 0, "voice2": 5.0}},
        },
    }
    proxy = start_proxy(tmp_path_factory.mktemp("bidi"), simulator.url, config)
    yield proxy
    proxy.stop()


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, WITHIN))


def talk(proxy: Proxy, key: dict[str, str], script: Callable[[Conversation], Awaitable[Any]],
         headers: dict[str, str] | None = None) -> Outcome:
    """Open a conversation with SONIC, run `script` on it, and let go of it whatever happens."""

    async def main() -> Outcome:
        conversation = Conversation(proxy.url, key["AWS_ACCESS_KEY_ID"], key["AWS_SECRET_ACCESS_KEY"], SONIC,
                                    extra_headers=headers)
        try:
            await conversation.open()
            await script(conversation)
        finally:
            conversation.hang_up()
        return conversation.outcome

    return cast(Outcome, run(main()))


async def _answer(conversation: Conversation) -> dict[str, Any]:
    """The usage event that ends the model's answer to a turn."""
    assert await conversation.until("audioOutput") is not None
    usage = await conversation.until("usageEvent")
    assert usage is not None
    return usage


def _sim_request(simulator: Process, request_id: str) -> dict[str, Any]:
    records = httpx.get(f"{simulator.url}/_sim/requests", timeout=5).json()
    records = records["requests"] if isinstance(records, dict) else records
    return next(record for record in records if record["request_id"] == request_id)


def _pico(input_speech: int, input_text: int, output_speech: int, output_text: int) -> int:
    """The cost at SONIC_RATES (USD per 1M tokens = pico-USD per token ÷ 10⁶)."""
    return input_speech * 3_400_000 + input_text * 60_000 + output_speech * 13_600_000 + output_text * 240_000


def _last_total(outcome: Outcome) -> dict[str, dict[str, int]]:
    return dict(outcome.usage_events()[-1]["details"]["total"])


def test_a_conversation_is_relayed_both_ways_and_metered_exactly(voice_proxy: Proxy, simulator: Process) -> None:
    key = voice_proxy.issue_key("acme", "voice")

    async def script(conversation: Conversation) -> None:
        await conversation.say(speech_turn(conversation.prompt))
        assert (await _answer(conversation))["details"]["delta"]["input"]["speechTokens"] > 0
        # The second turn is said only after the first was answered: a full-duplex relay.
        await conversation.say(text_turn(conversation.prompt, "And what about tomorrow?"))
        await _answer(conversation)
        await conversation.finish()

    outcome = talk(voice_proxy, key, script)
    assert outcome.status == 200 and not outcome.exceptions
    assert outcome.headers["x-costkeeper-model-id"] == SONIC and outcome.headers["x-costkeeper-fallback"] == "false"
    kinds = [next(iter(event)) for event in outcome.events]
    assert kinds.count("audioOutput") == 2 and kinds[-1] == "completionEnd"
    total = _last_total(outcome)
    event = wait_for_event(voice_proxy, outcome.request_id)
    assert (event.org, event.app, event.operation, event.model) == ("acme", "voice", BIDI, SONIC)
    assert not event.estimated and not event.hung_up and event.status == 200
    assert event.input_tokens == total["input"]["speechTokens"] + total["input"]["textTokens"]
    assert event.output_tokens == total["output"]["speechTokens"] + total["output"]["textTokens"]
    assert event.priced and event.cost_pico_usd == _pico(total["input"]["speechTokens"], total["input"]["textTokens"],
                                                         total["output"]["speechTokens"],
                                                         total["output"]["textTokens"])
    # What the simulator metered is what the client saw: every event reached it, re-signed.
    seen = _sim_request(simulator, outcome.request_id)
    assert seen["status"] == 200 and seen["access_key"] == SIM_ACCESS_KEY and "outcome" not in seen
    assert seen["usage"]["input_speech_tokens"] == total["input"]["speechTokens"] > 0


def test_a_conversation_is_attributed_by_its_tag_header(voice_proxy: Proxy, simulator: Process) -> None:
    """Issue #22 item 3 on the bidirectional stream: an `x-costkeeper-tag-*` header on the
    head (signed by the client) tags the conversation's usage; Bedrock never sees it."""
    key = voice_proxy.issue_key("acme", "voice-tagged")

    async def script(conversation: Conversation) -> None:
        await conversation.say(text_turn(conversation.prompt, "Hello there"))
        await _answer(conversation)
        await conversation.finish()

    outcome = talk(voice_proxy, key, script, headers={"x-costkeeper-tag-project": "voicebot"})
    assert outcome.status == 200 and not outcome.exceptions
    event = wait_for_event(voice_proxy, outcome.request_id)
    assert dict(event.tags) == {"project": "voicebot"}
    seen = _sim_request(simulator, outcome.request_id)
    assert seen["headers"] and not any(name.startswith("x-costkeeper") for name in seen["headers"])


def test_a_hang_up_mid_stream_meters_what_was_seen_flagged_estimated(voice_proxy: Proxy, simulator: Process) -> None:
    key = voice_proxy.issue_key("acme", "hangs-up")

    async def script(conversation: Conversation) -> None:
        await conversation.say(text_turn(conversation.prompt, "Tell me a long story [[sim:hold]]"))
        await _answer(conversation)  # then the client goes away, the stream still open

    outcome = talk(voice_proxy, key, script)
    total = _last_total(outcome)
    event = wait_for_event(voice_proxy, outcome.request_id)
    assert event.hung_up and event.estimated and event.status == 200
    assert (event.input_tokens, event.output_tokens) == (
        total["input"]["textTokens"] + total["input"]["speechTokens"],
        total["output"]["textTokens"] + total["output"]["speechTokens"])
    deadline = time.monotonic() + WITHIN  # the proxy cancelled the upstream stream too
    while _sim_request(simulator, outcome.request_id).get("outcome") != "client gone":
        assert time.monotonic() < deadline, "the upstream stream was not cancelled"
        time.sleep(0.05)


def test_an_upstream_cut_ends_the_stream_with_an_exception_frame_and_meters_it_estimated(
        voice_proxy: Proxy) -> None:
    key = voice_proxy.issue_key("acme", "cut")

    async def script(conversation: Conversation) -> None:
        await conversation.say(text_turn(conversation.prompt, "Hello [[sim:cut]]"))
        await conversation.until("\0")  # to the end of the client's stream

    outcome = talk(voice_proxy, key, script)
    assert [kind for kind, _ in outcome.exceptions] == ["serviceUnavailableException"]
    event = wait_for_event(voice_proxy, outcome.request_id)
    assert event.estimated and not event.hung_up
    assert event.output_tokens == sum(_last_total(outcome)["output"].values()) > 0


def test_a_tampered_event_is_refused_and_never_reaches_bedrock(voice_proxy: Proxy, simulator: Process) -> None:
    key = voice_proxy.issue_key("acme", "tamper")

    async def script(conversation: Conversation) -> None:
        await conversation.say(text_turn(conversation.prompt, "one")[:1], tamper=True)
        await conversation.until("\0")

    outcome = talk(voice_proxy, key, script)
    # The proxy's refusal: had it re-signed the event, the simulator would have refused the
    # altered message itself ("Invalid input event", its inner CRC no longer matches).
    assert outcome.exceptions == [("validationException",
                                   "The event signature we calculated does not match the signature you provided.")]
    assert _sim_request(simulator, outcome.request_id).get("outcome") != "refused event"


def test_an_input_event_over_the_body_limit_is_refused(voice_proxy: Proxy) -> None:
    key = voice_proxy.issue_key("acme", "big")

    async def script(conversation: Conversation) -> None:
        await conversation.say(speech_turn(conversation.prompt, bytes(MAX_EVENT_BYTES), pieces=1))
        await conversation.until("\0")

    outcome = talk(voice_proxy, key, script)
    assert outcome.exceptions and outcome.exceptions[-1][0] == "validationException"
    assert f"exceeds the limit of {MAX_EVENT_BYTES} bytes" in outcome.exceptions[-1][1]


def test_http_1_1_is_refused_by_the_proxy_and_by_the_simulator(voice_proxy: Proxy, simulator: Process) -> None:
    key = voice_proxy.issue_key("acme", "http11")
    for url, (access, secret) in ((voice_proxy.url, (key["AWS_ACCESS_KEY_ID"], key["AWS_SECRET_ACCESS_KEY"])),
                                  (simulator.url, (SIM_ACCESS_KEY, SIM_SECRET_KEY))):
        target = f"{url}/model/{SONIC.replace(':', '%3A')}/invoke-with-bidirectional-stream"
        request = AWSRequest("POST", target, headers={"X-Amz-Content-SHA256": "STREAMING-AWS4-HMAC-SHA256-EVENTS"})
        SigV4Auth(Credentials(access, secret), "bedrock", "us-east-1").add_auth(request)
        response = httpx.post(target, headers=dict(request.headers.items()), timeout=10)
        assert response.status_code == 400, response.text
        assert response.headers["x-amzn-errortype"].startswith("ValidationException")
        assert response.json()["message"] == HTTP2_ONLY


def test_a_model_that_does_not_speak_it_gets_bedrocks_refusal_relayed(voice_proxy: Proxy) -> None:
    key = voice_proxy.issue_key("acme", "wrong-model")
    outcome = run(opened(voice_proxy.url, key, LITE))
    assert outcome.status == 400 and outcome.headers["x-amzn-errortype"].startswith("ValidationException")
    assert json.loads(outcome.body)["message"] == NOT_BIDI_MODEL
    event = wait_for_event(voice_proxy, outcome.request_id)
    assert (event.model, event.status, event.input_tokens) == (LITE, 400, 0)


def test_a_spent_quota_falls_back_to_the_next_bidirectional_model(voice_proxy: Proxy, simulator: Process) -> None:
    key = voice_proxy.issue_key("spent", "voice")
    outcome = run(opened(voice_proxy.url, key, SONIC))
    assert outcome.status == 200
    assert (outcome.headers["x-costkeeper-model-id"], outcome.headers["x-costkeeper-fallback"]) == (SONIC2, "true")
    assert _sim_request(simulator, outcome.request_id)["model_id"] == SONIC2
    event = wait_for_event(voice_proxy, outcome.request_id)
    assert (event.requested_model, event.model, event.quota_scope) == (SONIC, SONIC2, "spent")
    assert event.cost_pico_usd > 0 and not event.estimated


def test_a_trusted_sidecars_events_are_opened_and_signed_by_the_proxy(tmp_path: Path, simulator: Process) -> None:
    """Trust mode checks no signature of the caller's: its envelopes (signed with whatever
    keys it has) are opened, and every event reaches Bedrock signed by the proxy."""
    proxy = start_proxy(tmp_path, simulator.url, {
        "pricing": {**TEST_PRICING, SONIC: SONIC_RATES},
        "auth": {"mode": "trust", "trust_org": "team", "trust_app": "voice"},
        "orgs": {"team": {"allowed_operations": [BIDI]}},
    })
    try:
        anyone = {"AWS_ACCESS_KEY_ID": "AKIDANYONE", "AWS_SECRET_ACCESS_KEY": "not-checked"}

        async def script(conversation: Conversation) -> None:
            await conversation.say(speech_turn(conversation.prompt))
            await _answer(conversation)
            await conversation.finish()

        outcome = talk(proxy, anyone, script)
        assert outcome.status == 200 and not outcome.exceptions
        event = wait_for_event(proxy, outcome.request_id)
        assert (event.org, event.app, event.estimated) == ("team", "voice", False)
        assert event.input_tokens == sum(_last_total(outcome)["input"].values()) > 0
        assert _sim_request(simulator, outcome.request_id)["access_key"] == SIM_ACCESS_KEY
    finally:
        proxy.stop()
