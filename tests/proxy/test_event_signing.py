"""Signed event-stream envelopes (proxy/event_signing.py) against the AWS SDK for
JavaScript's signer, and the chain's properties: a frame changed, dropped, replayed or
reordered breaks it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, EventStreamMessage
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.eventstream import encode_message
from proxy.event_signing import (
    ChainSigner,
    ChainVerifier,
    EventChainError,
    envelopes,
    seed_signature,
)

#: Made by @smithy/signature-v4 (`signMessage`) and @smithy/core's EventStreamCodec, as
#: @aws-sdk/eventstream-handler-node's EventSigningTransformStream uses them (tools/node-sdk,
#: @aws-sdk/client-bedrock-runtime 3.1178.0): key AKIDEXAMPLE/"secret", us-east-1, bedrock,
#: prior signature "a" × 64, :date 1764963000123 ms then one second later; payloads
#: b"hello-inner-message", then b"" (the end frame).
JS_FRAMES = [
    "00000066000000439c854dae053a64617465080000019aeffe1f3b103a6368756e6b2d7369676e6174757265060020a1d111462eeb"
    "e7b246abd7d43e800f05985368e45f56c101238a5d0f24fa191d68656c6c6f2d696e6e65722d6d657373616765c1503f7a",
    "0000005300000043f5447a58053a64617465080000019aeffe2323103a6368756e6b2d7369676e61747572650600202328ce9179"
    "59e38d08c6a21e1937980a5303aacd61f4847a2f8bccc327dcdefb130989de",
]
SEED = "a" * 64
NOW = 1764963000.5


def _decoded(frame: bytes) -> EventStreamMessage:
    return next(envelopes(EventStreamBuffer(), frame))


def _verifier(secret: str = "secret", clock: float = NOW) -> ChainVerifier:
    return ChainVerifier("AKIDEXAMPLE", secret, "us-east-1", "bedrock", SEED, clock=lambda: clock)


def test_the_javascript_sdks_envelopes_verify_and_ours_are_byte_identical() -> None:
    verifier = _verifier()
    assert [verifier.open(_decoded(bytes.fromhex(frame))) for frame in JS_FRAMES] == [b"hello-inner-message", b""]
    moments = iter([1764963000.123, 1764963001.123])
    signer = ChainSigner(Credentials("AKIDEXAMPLE", "secret"), "us-east-1", "bedrock", SEED, clock=lambda: next(moments))
    assert [signer.sign(b"hello-inner-message").hex(), signer.sign(b"").hex()] == JS_FRAMES


@pytest.mark.parametrize("case", ["wrong secret", "dropped", "reordered", "replayed", "stale", "unsigned"])
def test_a_broken_chain_is_refused(case: str) -> None:
    first, second = (_decoded(bytes.fromhex(frame)) for frame in JS_FRAMES)
    verifier = _verifier("other" if case == "wrong secret" else "secret", NOW + 3600 if case == "stale" else NOW)
    with pytest.raises(EventChainError):
        if case in ("wrong secret", "stale"):
            verifier.open(first)
        elif case in ("dropped", "reordered"):
            verifier.open(second)
        elif case == "replayed":
            verifier.open(first)
            verifier.open(first)
        else:
            verifier.open(_decoded(encode_message({":event-type": "chunk"}, b"{}")))


def test_the_seed_is_the_heads_signature() -> None:
    assert seed_signature("AWS4-HMAC-SHA256 Credential=A/20261205/us-east-1/bedrock/aws4_request, "
                          "SignedHeaders=host;x-amz-date, Signature=" + "0f" * 32) == "0f" * 32


@settings(max_examples=60)
@given(messages=st.lists(st.binary(max_size=300), min_size=1, max_size=6), data=st.data())
def test_what_is_signed_verifies_in_order_and_any_changed_byte_breaks_it(messages: list[bytes],
                                                                        data: st.DataObject) -> None:
    clock = iter(range(1_796_000_000, 1_796_000_100))
    signer = ChainSigner(Credentials("AKIDX", "s3cret"), "us-west-2", "bedrock", SEED, clock=lambda: next(clock))
    frames = [signer.sign(message) for message in messages]
    verifier = ChainVerifier("AKIDX", "s3cret", "us-west-2", "bedrock", SEED, clock=lambda: 1_796_000_050)
    buffer = EventStreamBuffer()
    assert [verifier.open(envelope) for envelope in envelopes(buffer, b"".join(frames))] == messages
    # One payload byte changed (its CRCs recomputed, so only the signature can tell).
    index = data.draw(st.integers(0, len(messages) - 1))
    target = _decoded(frames[index])
    if not target.payload:
        return
    position = data.draw(st.integers(0, len(target.payload) - 1))
    changed = bytearray(target.payload)
    changed[position] ^= 0x01
    forged = encode_message({":date": _moment(target), ":chunk-signature": target.headers[":chunk-signature"]}, bytes(changed))
    fresh = ChainVerifier("AKIDX", "s3cret", "us-west-2", "bedrock", SEED, clock=lambda: 1_796_000_050)
    for frame in frames[:index]:
        fresh.open(_decoded(frame))
    with pytest.raises(EventChainError):
        fresh.open(_decoded(forged))


def _moment(message: EventStreamMessage) -> datetime:
    return datetime.fromtimestamp(message.headers[":date"] / 1000, UTC)
