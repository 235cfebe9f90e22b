"""The profile-only table (simulator/profiles.py), in process: rows, id forms, scopes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator import profiles
from simulator.profiles import (
    ANY_SCOPE,
    CHECKED_OPERATIONS,
    PROFILE_ONLY,
    SCOPES,
    ModelRef,
    parse,
    profile_only,
    refusal,
)
from tests.simulator.profile_cases import (
    INVALID_MODEL,
    ON_DEMAND_MODELS,
    ON_DEMAND_REFUSAL,
    PROFILE_ONLY_MODELS,
    SCOPED_PROFILES,
    foundation_model_arn,
)


def _message(model_id: str) -> str | None:
    refused = refusal(model_id)
    if refused is None:
        return None
    assert (refused.status, refused.code) == (400, "ValidationException")
    return refused.message


@pytest.mark.parametrize("model", PROFILE_ONLY_MODELS.values(), ids=PROFILE_ONLY_MODELS)
def test_bare_id_and_foundation_model_arn_are_refused(model: str) -> None:
    expected = ON_DEMAND_REFUSAL.format(model=model)
    assert _message(model) == expected
    # The ARN's message names the model id inside it (profiles.refusal explains why).
    assert _message(foundation_model_arn(model)) == expected
    assert _message(foundation_model_arn(model, "eu-central-1")) == expected


@pytest.mark.parametrize("model", PROFILE_ONLY_MODELS.values(), ids=PROFILE_ONLY_MODELS)
def test_every_profile_only_model_has_a_us_profile(model: str) -> None:
    assert _message(f"us.{model}") is None
    assert _message(f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.{model}") is None


def test_the_message_is_bedrocks_word_for_word() -> None:
    """As quoted in BEDROCK_WIRE.md §1.2, with the typographic apostrophe (U+2019)."""
    assert _message("anthropic.claude-sonnet-4-5-20250929-v1:0") == (
        "Invocation of model ID anthropic.claude-sonnet-4-5-20250929-v1:0 with on-demand throughput "
        "isn’t supported. Retry your request with the ID or ARN of an inference profile that contains "
        "this model.")
    assert "\u2019" in (_message("deepseek.r1-v1:0") or "")


@pytest.mark.parametrize("model", ON_DEMAND_MODELS)
def test_on_demand_models_are_left_alone(model: str) -> None:
    assert profile_only(model) is None
    assert _message(model) is None
    assert _message(foundation_model_arn(model)) is None
    for scope in SCOPES:  # which profiles these have is not tabled: none is refused
        assert _message(f"{scope}.{model}") is None


@pytest.mark.parametrize(("profile", "exists"), SCOPED_PROFILES)
def test_profile_scopes(profile: str, exists: bool) -> None:
    assert _message(profile) == (None if exists else INVALID_MODEL)
    arn = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{profile}"
    assert _message(arn) == (None if exists else INVALID_MODEL)


@pytest.mark.parametrize("model_id", [
    "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6",
    "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abcdef123456",
    "arn:aws:bedrock:us-east-1:123456789012:custom-model/anthropic.claude-sonnet-4-5-20250929-v1:0/x",
    "arn:aws:sagemaker:us-east-1:123456789012:endpoint/my-endpoint",
    "stability.sd3-5-large-v1:0",
    "anthropic.claude-x",
])
def test_other_forms_are_not_this_checks_business(model_id: str) -> None:
    assert _message(model_id) is None


def test_an_inference_profile_arn_without_a_scope_names_no_profile() -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/anthropic.claude-haiku-4-5-20251001-v1:0"
    assert _message(arn) == INVALID_MODEL


@pytest.mark.parametrize(("model_id", "expected"), [
    ("amazon.nova-lite-v1:0", ModelRef("base", "amazon.nova-lite-v1:0")),
    ("us-gov.a.b-v1:0", ModelRef("profile", "a.b-v1:0", "us-gov")),
    ("global.a.b", ModelRef("profile", "a.b", "global")),
    ("usa.a.b", ModelRef("base", "usa.a.b")),
    ("arn:aws:bedrock:us-east-1::foundation-model/a.b-v1:0", ModelRef("foundation-model", "a.b-v1:0")),
    ("arn:aws:bedrock:eu-west-1:1:inference-profile/eu.a.b-v1:0", ModelRef("profile", "a.b-v1:0", "eu")),
    ("arn:aws:bedrock:us-east-1:1:prompt/PROMPT12345:2",
     ModelRef("other", "arn:aws:bedrock:us-east-1:1:prompt/PROMPT12345:2")),
])
def test_parse(model_id: str, expected: ModelRef) -> None:
    assert parse(model_id) == expected


def test_table_rows() -> None:
    assert CHECKED_OPERATIONS == {"InvokeModel", "InvokeModelWithResponseStream", "Converse", "ConverseStream"}
    assert "us" in ANY_SCOPE and "us-gov" in ANY_SCOPE and len(ANY_SCOPE) == len(SCOPES) == 8
    for row in PROFILE_ONLY:
        assert row.scopes and row.scopes <= ANY_SCOPE, row
        assert "us" in row.scopes, row  # every profile-only model today has a US profile
    patterns = [row.pattern for row in PROFILE_ONLY]
    assert len(set(patterns)) == len(patterns)


@pytest.mark.parametrize("model", PROFILE_ONLY_MODELS.values(), ids=PROFILE_ONLY_MODELS)
def test_each_listed_model_matches_a_row_that_is_not_a_family_catch_all(model: str) -> None:
    """The family rows with every scope stand for models not tabled yet; the models
    this project names must have their own row, so their scopes are checked."""
    row = profile_only(model)
    assert row is not None and row.scopes != ANY_SCOPE, row


# Generated ids: any suffix on a row's pattern, in every form a client can send.
_SUFFIX = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-:", max_size=16)


@st.composite
def _profile_only_ids(draw: st.DrawFn) -> str:
    row = draw(st.sampled_from(PROFILE_ONLY))
    pieces = row.pattern.split("*")
    return "".join(piece + (draw(_SUFFIX) if index < len(pieces) - 1 else "")
                   for index, piece in enumerate(pieces))


@given(model=_profile_only_ids(), region=st.sampled_from(["us-east-1", "us-west-2", "eu-west-3", "ap-northeast-1"]),
       scope=st.sampled_from(SCOPES))
def test_property_every_form_of_a_profile_only_model(model: str, region: str, scope: str) -> None:
    row = profile_only(model)
    assert row is not None
    refused = ON_DEMAND_REFUSAL.format(model=model)
    assert _message(model) == refused
    assert _message(foundation_model_arn(model, region)) == refused
    expected = None if scope in row.scopes else INVALID_MODEL
    assert _message(f"{scope}.{model}") == expected
    assert _message(f"arn:aws:bedrock:{region}:123456789012:inference-profile/{scope}.{model}") == expected


@pytest.mark.parametrize(("scope", "region", "allowed"), [
    ("us", "us-east-1", True), ("us", "us-west-2", True), ("us", "eu-west-1", False), ("us", "us-gov-west-1", False),
    ("eu", "eu-central-1", True), ("eu", "us-east-1", False), ("apac", "ap-south-1", True),
    ("jp", "ap-northeast-1", True), ("jp", "ap-southeast-2", False), ("au", "ap-southeast-2", True),
    ("ca", "ca-central-1", True), ("us-gov", "us-gov-west-1", True), ("us-gov", "us-east-1", False),
    ("global", "eu-west-3", True), ("global", "us-gov-east-1", False),
])
def test_a_geo_profile_is_called_from_its_own_geography(scope: str, region: str, allowed: bool) -> None:
    assert profiles.source_region_allows(scope, region) is allowed
    refused = profiles.refusal(f"{scope}.anthropic.claude-haiku-4-5-20251001-v1:0", region)
    if scope in ("ca", "us-gov"):  # Haiku 4.5 has no such profile: refused wherever it is called from
        assert refused is not None
    elif allowed:
        assert refused is None
    else:
        assert refused is not None and refused.message == profiles.INVALID_MODEL
