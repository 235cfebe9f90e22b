"""Bad max-token values are refused before admission (issues #17 item 3, #18 item 15).

For every family's max-tokens field and every hostile value a client can write in
JSON, the request path (strict parsing, then admission) either refuses it with a
`ValidationException` naming the field, or admits it with a finite, non-negative
integer worst case on every chain model. Nothing else is ever raised.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import family_of
from adapters.maxtokens import (
    MaxTokensError,
    checked_max_output_tokens,
    max_output_tokens,
    max_tokens_fields,
)
from adapters.translate import can_translate
from metering.pricing import Price, PriceTable
from metering.quotas import Mode, Selection
from proxy.admission import Admission
from proxy.errors import ValidationException
from proxy.identity import Caller
from proxy.model_limits import UNLISTED_MAX_OUTPUT_TOKENS, ModelLimits, parse_model_limits
from proxy.policy_build import build_policies
from proxy.ratelimit import RateLimiter
from proxy.request import json_body
from proxy.routing import parse_route
from proxy.strict_json import BadNumber, loads

#: One model per family, all priced (the worst case is computed for each), some listed in the limits.
MODELS = {
    "anthropic": "anthropic.claude-haiku-4-5-20251001-v1:0",
    "nova": "amazon.nova-lite-v1:0",
    "llama": "meta.llama3-3-70b-instruct-v1:0",
    "titan": "amazon.titan-text-express-v1",
    "mistral": "mistral.mistral-large-2407-v1:0",
    "cohere": "cohere.command-r-plus-v1:0",
    "ai21": "ai21.jamba-1-5-large-v1:0",
    "deepseek": "deepseek.r1-v1:0",
    "openai": "openai.gpt-oss-120b-1:0",
    "generic": "acme.unknown-model-v1:0",
}
LIMITS = ModelLimits({"anthropic.claude-haiku-4-5-20251001-v1:0": 64000, "amazon.nova-lite-v1:0": 10000,
                      "deepseek.r1-v1:0": 32768})
PRICES = {model: Price.from_mapping(model, {"input": 75.0, "output": 150.0}) for model in MODELS.values()}
#: JSON literals a hostile client writes where a count goes.
HOSTILE = ["NaN", "-NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1E309", "-1", "0", "1", "1.5", "1e3",
           "1.0", "-0", '"100"', '""', "true", "false", "null", "[]", "[5]", "{}", '{"value": 5}',
           "64000", "64001", "10000", "10001", "1000000000", str(2**63), str(10**30), "9" * 4300, "9" * 4301]


class RecordingSelector:
    """Stands in for the quota selector: computes the worst case on every chain model
    (what TIGHT mode reserves) and serves the first one."""

    def __init__(self) -> None:
        self.worst: list[int] = []

    async def select(self, scope: str, day: str, chain: Sequence[str], quota_of: Any,
                     worst_case: Callable[[str], int], *, fail_closed: bool = False) -> Selection:
        self.worst = [worst_case(model) for model in chain]
        return Selection(chain[0], False, Mode.TIGHT, None, day)

    def release(self, selection: Selection) -> None:
        return None

    def settle(self, selection: Selection, cost: int) -> tuple[int, str]:
        return 0, ""


def _admission(selector: RecordingSelector, family: str) -> Admission:
    model = MODELS[family]
    # A chain through the Converse-translatable families is not needed: the entry model
    # and one same-family fallback exercise the per-model bound.
    policies = build_policies(
        models={}, fallback=[], orgs={"acme": {"daily_quota_usd": {model: 1000}, "fallback": [model]}},
        quotas=None, priced=lambda m: m in PRICES, family_of=family_of, can_translate=can_translate,
        model_limits=LIMITS,
    )
    return Admission(policies, selector, PriceTable(PRICES), RateLimiter())  # type: ignore[arg-type]


def _body(path: tuple[str, ...], literal: str, prompt: Any) -> bytes:
    text = literal
    for key in reversed(path[1:]):
        text = "{" + json.dumps(key) + ": " + text + "}"
    return ('{"messages": ' + json.dumps(prompt) + ", " + json.dumps(path[0]) + ": " + text + "}").encode()


def _run(family: str, operation: str, body: bytes) -> tuple[Any, RecordingSelector]:
    model = MODELS[family]
    path = f"/model/{model}/{operation}"
    route = parse_route("POST", path)
    selector = RecordingSelector()
    document = json_body(route, body)
    plan = asyncio.run(_admission(selector, family).plan(route, Caller("acme", "app"), path, body, document))
    return plan, selector


def _syntax_error(literal: str) -> bool:
    try:
        json.loads(literal)
    except json.JSONDecodeError:
        return True
    except ValueError:  # too many digits: a number, refused by the strict parser naming the field
        return False
    return False


literals = st.one_of(
    st.sampled_from(HOSTILE),
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.integers(min_value=1, max_value=6000).map(lambda digits: "9" * digits),
    st.floats(allow_nan=False, allow_infinity=False).map(json.dumps),
)
cases = st.sampled_from([*(("invoke", f) for f in MODELS), ("converse", "nova"), ("converse", "anthropic")])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases, data=st.data(), literal=literals)
def test_admission_refuses_naming_the_field_or_admits_a_finite_worst_case(
    case: tuple[str, str], data: st.DataObject, literal: str
) -> None:
    operation, family = case
    fields = max_tokens_fields("converse" if operation == "converse" else family)
    field = data.draw(st.sampled_from(fields))
    prompt = [{"role": "user", "content": [{"text": "hi"}]}]
    try:
        plan, selector = _run(family, operation, _body(field, literal, prompt))
    except ValidationException as exc:
        assert len(str(exc)) < 400  # never the whole of a hostile value
        if _syntax_error(literal):  # not a value at all (`-NaN`): malformed JSON for any reader
            assert "Malformed input request" in str(exc)
        else:
            assert ".".join(field) in str(exc), str(exc)
        return
    assert plan.model == MODELS[family]
    assert selector.worst and all(isinstance(w, int) and 0 <= w < 10**15 for w in selector.worst)
    # Admitted: the value was absent, null or an integer within the model's limit.
    value = json.loads(literal)
    assert value is None or (isinstance(value, int) and not isinstance(value, bool)
                             and 0 <= value <= LIMITS.output_limit(MODELS[family]))


@pytest.mark.parametrize(("literal", "shown"), [
    ("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("1e400", "1e400"),
    ("9" * 5000, "a 5000-digit integer"),
])
def test_numbers_bedrock_refuses_are_named_with_their_path(literal: str, shown: str) -> None:
    body = _body(("inferenceConfig", "maxTokens"), literal, [])
    with pytest.raises(BadNumber) as raised:
        loads(body)
    assert raised.value.path == "inferenceConfig.maxTokens" and raised.value.literal == shown
    with pytest.raises(ValidationException, match=r"Malformed input request: inferenceConfig\.maxTokens: "):
        json_body(parse_route("POST", "/model/amazon.nova-lite-v1:0/converse"), body)


def test_valid_json_parses_as_before() -> None:
    body = b'{"a": [1, 2.5, -3e10, "NaN", {"b": null, "c": true}], "d": 1e308}'
    assert loads(body) == json.loads(body)
    assert math.isfinite(loads(body)["d"])


@pytest.mark.parametrize(("document", "message"), [
    ({"max_tokens": -1}, "max_tokens: expected a non-negative integer, got -1"),
    ({"max_tokens": 1.5}, "got 1.5"),
    ({"max_tokens": "100"}, "got '100'"),
    ({"max_tokens": True}, "got True"),
    ({"max_tokens": 64001}, "max_tokens: 64001 exceeds the model's limit of 64000 output tokens"),
    ({"max_tokens": 10**4000}, "a 4001-digit integer exceeds"),
    ({"max_tokens_to_sample": [1] * 10_000}, "got [1, 1, 1, 1, ...]"),
])
def test_checked_max_output_tokens_names_the_field(document: dict[str, Any], message: str) -> None:
    with pytest.raises(MaxTokensError) as raised:
        checked_max_output_tokens("anthropic", document, 64000)
    assert message in str(raised.value)


def test_checked_max_output_tokens_admits_absent_null_and_in_range() -> None:
    assert checked_max_output_tokens("nova", {"inferenceConfig": {"maxTokens": None}}, 10) is None
    assert checked_max_output_tokens("nova", {"inferenceConfig": 5}, 10) is None  # Bedrock's to refuse
    assert checked_max_output_tokens("nova", {"inferenceConfig": {"max_new_tokens": 10}}, 10) == 10
    assert checked_max_output_tokens("llama", {"max_gen_len": 0}, 10) is None  # 0: the model's default


_FIELD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 20), st.floats(allow_nan=False),
                          st.text(max_size=3), st.lists(st.integers(0, 5), max_size=2))


@given(family=st.sampled_from(["converse", "anthropic", "nova", "openai", "llama", "unknown"]),
       values=st.lists(_FIELD_VALUES, min_size=2, max_size=2), present=st.lists(st.booleans(), min_size=2, max_size=2),
       limit=st.integers(0, 20))
def test_checked_max_output_tokens_is_max_output_tokens_once_every_field_passes(
    family: str, values: list[Any], present: list[bool], limit: int,
) -> None:
    """Checked in one walk (issue #20): an admitted request's answer is exactly what
    `max_output_tokens` reads, and a refusal names a field holding a bad value."""
    document: dict[str, Any] = {}
    for path, value, there in zip(max_tokens_fields(family), values, present, strict=False):
        if there:
            node = document
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
    try:
        asked = checked_max_output_tokens(family, document, limit)
    except MaxTokensError as refused:
        assert refused.field in {".".join(path) for path in max_tokens_fields(family)}
    else:
        assert asked == max_output_tokens(family, document)
        assert asked is None or 0 < asked <= limit


def test_model_limits_config() -> None:
    limits = parse_model_limits({"amazon.nova-pro-v1:0": {"max_output_tokens": 10000}})
    assert limits.output_limit("us.amazon.nova-pro-v1:0") == 10000
    assert limits.output_limit("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0") == 10000
    assert limits.output_limit("amazon.nova-lite-v1:0") == UNLISTED_MAX_OUTPUT_TOKENS
    for bad, phrase in [({"us.amazon.nova-pro-v1:0": {"max_output_tokens": 1}}, "base model id"),
                        ({"amazon.nova-pro-v1:0": {"max_output_tokens": 0}}, "integer from 1"),
                        ({"amazon.nova-pro-v1:0": {"max_output_tokens": True}}, "integer from 1"),
                        ({"amazon.nova-pro-v1:0": {"max_tokens": 5}}, "expected {max_output_tokens: N}"),
                        ([1], "expected a mapping")]:
        with pytest.raises(ValueError, match=phrase):
            parse_model_limits(bad)


def test_a_fallbacks_worst_case_is_bounded_by_its_own_limit() -> None:
    claude, nova = MODELS["anthropic"], MODELS["nova"]
    selector = RecordingSelector()
    policies = build_policies(
        models={}, fallback=[claude, nova], orgs={"acme": {"daily_quota_usd": {claude: 1000, nova: 1000}}},
        quotas=None, priced=lambda m: m in PRICES, family_of=family_of, can_translate=can_translate,
        model_limits=LIMITS,
    )
    admission = Admission(policies, selector, PriceTable(PRICES), RateLimiter())  # type: ignore[arg-type]
    path = f"/model/{claude}/converse"
    document = {"messages": [], "inferenceConfig": {"maxTokens": 60000}}
    asyncio.run(admission.plan(parse_route("POST", path), Caller("acme", "app"), path,
                               json.dumps(document).encode(), document))
    claude_worst, nova_worst = selector.worst
    # Same prices and input: the difference is the output Nova cannot produce (60,000 asked, 10,000 max).
    assert claude_worst - nova_worst == (60000 - 10000) * 150 * 10**6  # pico-USD


class FallbackSelector(RecordingSelector):
    """Serves the chain's last model, as a spent quota on the others would."""

    async def select(self, scope: str, day: str, chain: Sequence[str], quota_of: Any,
                     worst_case: Callable[[str], int], *, fail_closed: bool = False) -> Selection:
        await super().select(scope, day, chain, quota_of, worst_case, fail_closed=fail_closed)
        return Selection(chain[-1], True, Mode.TIGHT, None, day)


@pytest.mark.parametrize(("operation", "asked", "sent"), [
    ("converse", {"inferenceConfig": {"maxTokens": 60000}}, {"inferenceConfig": {"maxTokens": 10000}}),
    ("converse", {"inferenceConfig": {"maxTokens": 900}}, {"inferenceConfig": {"maxTokens": 900}}),
    ("converse", {}, {}),
    ("invoke", {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 60000},
     {"inferenceConfig": {"maxTokens": 10000}}),
])
def test_a_fallback_is_sent_at_most_its_own_output_limit(operation: str, asked: dict[str, Any],
                                                        sent: dict[str, Any]) -> None:
    """A Claude request for 60,000 output tokens, served by Nova (10,000 at most): Bedrock
    would refuse the fallback's request, so the value sent is the fallback's limit. A value
    within it, or none, is left as the client wrote it."""
    claude, nova = MODELS["anthropic"], MODELS["nova"]
    policies = build_policies(
        models={}, fallback=[claude, nova], orgs={"acme": {"daily_quota_usd": {claude: 1000, nova: 1000}}},
        quotas=None, priced=lambda m: m in PRICES, family_of=family_of, can_translate=can_translate,
        model_limits=LIMITS,
    )
    admission = Admission(policies, FallbackSelector(), PriceTable(PRICES), RateLimiter())  # type: ignore[arg-type]
    path = f"/model/{claude}/{operation}"
    block = {"text": "hi"} if operation == "converse" else {"type": "text", "text": "hi"}
    document = {"messages": [{"role": "user", "content": [block]}], **asked}
    body = json.dumps(document).encode()
    plan = asyncio.run(admission.plan(parse_route("POST", path), Caller("acme", "app"), path, body, document))
    assert plan.model == nova
    forwarded = json.loads(plan.body)
    assert forwarded.get("inferenceConfig", {}).get("maxTokens") == sent.get("inferenceConfig", {}).get("maxTokens")
