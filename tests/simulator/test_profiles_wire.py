"""Profile-only models on the wire: boto3 and raw HTTP against a real simulator.

Bedrock answers a bare id or a foundation-model ARN of these models with a 400
before anything runs (BEDROCK_WIRE.md §1.2); their profiles, and models still
served on demand, answer as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.modelid import base_model_id, encode_model_id
from simulator.profiles import PROFILE_ONLY, profile_only
from tests.simulator.harness import SimServer
from tests.simulator.profile_cases import (
    ERROR_TYPE,
    INVALID_MODEL,
    ON_DEMAND_MODELS,
    ON_DEMAND_REFUSAL,
    PROFILE_ONLY_MODELS,
    SCOPED_PROFILES,
    converse_request,
    foundation_model_arn,
    native_request,
)

Call = Callable[[Any, str, str], Any]


def _invoke(bedrock: Any, model_id: str, prompt: str) -> Any:
    body = json.dumps(native_request(base_model_id(model_id), prompt))
    response = bedrock.invoke_model(modelId=model_id, body=body)
    response["body"].read()
    return response


def _invoke_stream(bedrock: Any, model_id: str, prompt: str) -> Any:
    body = json.dumps(native_request(base_model_id(model_id), prompt))
    response = bedrock.invoke_model_with_response_stream(modelId=model_id, body=body)
    assert all("chunk" in event for event in list(response["body"]))
    return response


def _converse(bedrock: Any, model_id: str, prompt: str) -> Any:
    return bedrock.converse(modelId=model_id, **converse_request(prompt))


def _converse_stream(bedrock: Any, model_id: str, prompt: str) -> Any:
    response = bedrock.converse_stream(modelId=model_id, **converse_request(prompt))
    assert "metadata" in list(response["stream"])[-1]
    return response


OPERATIONS: dict[str, Call] = {
    "InvokeModel": _invoke,
    "InvokeModelWithResponseStream": _invoke_stream,
    "Converse": _converse,
    "ConverseStream": _converse_stream,
}
PATHS = {"InvokeModel": "invoke", "InvokeModelWithResponseStream": "invoke-with-response-stream",
         "Converse": "converse", "ConverseStream": "converse-stream"}


def _refused(sim: SimServer, error: ClientError, message: str) -> dict[str, Any]:
    response = error.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == ERROR_TYPE
    assert response["Error"]["Code"] == "ValidationException"
    assert response["Error"]["Message"] == message
    record = sim.record(response["ResponseMetadata"]["RequestId"])
    assert (record["status"], record["error"]) == (400, "ValidationException")
    assert "usage" not in record  # refused before any generation
    return record


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("form", ["bare", "foundation-model-arn"])
@pytest.mark.parametrize("model", PROFILE_ONLY_MODELS.values(), ids=PROFILE_ONLY_MODELS)
def test_boto3_gets_bedrocks_400(sim: SimServer, bedrock: Any, model: str, form: str, operation: str,
                                 prompt: str) -> None:
    """botocore encodes `:` as %3A and the ARN's `/` as %2F; streams fail before their head."""
    model_id = model if form == "bare" else foundation_model_arn(model)
    with pytest.raises(ClientError) as caught:
        OPERATIONS[operation](bedrock, model_id, prompt)
    record = _refused(sim, caught.value, ON_DEMAND_REFUSAL.format(model=model))
    assert record["path"].split("/")[2] == encode_model_id(model_id)


@pytest.mark.parametrize("operation", PATHS)
@pytest.mark.parametrize("form", ["bare", "foundation-model-arn"])
@pytest.mark.parametrize("model", PROFILE_ONLY_MODELS.values(), ids=PROFILE_ONLY_MODELS)
def test_raw_colon_gets_the_same_400(sim: SimServer, model: str, form: str, operation: str) -> None:
    """The AnthropicBedrock SDK leaves `:` raw and encodes `/` (BEDROCK_WIRE.md §1.2)."""
    model_id = model if form == "bare" else foundation_model_arn(model)
    path = f"/model/{quote(model_id, safe=':;')}/{PATHS[operation]}"
    assert "%3A" not in path
    body = converse_request("Hi") if operation.startswith("Converse") else native_request(model, "Hi")
    response = sim.post(path, body)
    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"] == ERROR_TYPE
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"message": ON_DEMAND_REFUSAL.format(model=model)}
    assert sim.record(response.headers["x-amzn-requestid"])["path"] == path


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("model", PROFILE_ONLY_MODELS.values(), ids=PROFILE_ONLY_MODELS)
def test_us_profile_answers(sim: SimServer, bedrock: Any, model: str, operation: str, prompt: str) -> None:
    response = OPERATIONS[operation](bedrock, f"us.{model}", prompt)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert sim.record(response["ResponseMetadata"]["RequestId"])["base_model"] == model


@pytest.mark.parametrize("model_id", [
    "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "global.anthropic.claude-haiku-4-5-20251001-v1:0",
    "global.anthropic.claude-sonnet-4-20250514-v1:0",
    "global.anthropic.claude-opus-4-5-20251101-v1:0",
    "global.amazon.nova-2-lite-v1:0",
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/global.anthropic.claude-sonnet-4-5-20250929-v1:0",
])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_global_profile_answers(bedrock: Any, model_id: str, operation: str, prompt: str) -> None:
    response = OPERATIONS[operation](bedrock, model_id, prompt)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200


@pytest.mark.parametrize(("profile", "exists"), SCOPED_PROFILES)
def test_profile_in_a_scope_without_one(sim: SimServer, bedrock: Any, profile: str, exists: bool,
                                        prompt: str) -> None:
    if exists:
        # A geo profile is called from a source Region of its own geography.
        home = {"us": "us-east-1", "us-gov": "us-gov-west-1", "eu": "eu-west-1", "apac": "ap-south-1",
                "jp": "ap-northeast-1", "au": "ap-southeast-2", "ca": "ca-central-1"}.get(profile.split(".")[0])
        client = sim.client(region=home) if home else bedrock
        assert _converse(client, profile, prompt)["ResponseMetadata"]["HTTPStatusCode"] == 200
        return
    with pytest.raises(ClientError) as caught:
        _converse(bedrock, profile, prompt)
    _refused(sim, caught.value, INVALID_MODEL)


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("model", ON_DEMAND_MODELS)
def test_on_demand_models_still_answer(sim: SimServer, bedrock: Any, model: str, operation: str,
                                       prompt: str) -> None:
    for model_id in (model, foundation_model_arn(model)):
        response = OPERATIONS[operation](bedrock, model_id, prompt)
        assert sim.record(response["ResponseMetadata"]["RequestId"])["status"] == 200


@pytest.mark.parametrize("model", PROFILE_ONLY_MODELS.values(), ids=PROFILE_ONLY_MODELS)
def test_count_tokens_takes_the_bare_id(bedrock: Any, model: str) -> None:
    """Clients strip the geo prefix before CountTokens (BEDROCK_WIRE.md §1 notes)."""
    given_input = {"converse": {"messages": [{"role": "user", "content": [{"text": "Hello, world!"}]}]}}
    assert bedrock.count_tokens(modelId=model, input=given_input)["inputTokens"] > 0


_SUFFIX = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-:", max_size=12)


@st.composite
def _profile_only_ids(draw: st.DrawFn) -> str:
    pieces = draw(st.sampled_from(PROFILE_ONLY)).pattern.split("*")
    return "".join(piece + (draw(_SUFFIX) if index < len(pieces) - 1 else "")
                   for index, piece in enumerate(pieces))


@settings(max_examples=60, deadline=None)
@given(model=_profile_only_ids(), arn=st.booleans(), safe=st.sampled_from(["-_.~", ":;"]),
       path=st.sampled_from(["converse", "converse-stream"]))
def test_property_any_form_on_the_wire(sim: SimServer, model: str, arn: bool, safe: str, path: str) -> None:
    """For a generated id of a table row, encoded like botocore (`-_.~`) or the Anthropic
    SDK (`:;`): the bare id or foundation-model ARN is refused with Bedrock's 400, a
    `us.` profile (every row has one) answers."""
    assert profile_only(model) is not None
    refused_id = foundation_model_arn(model) if arn else model
    response = sim.post(f"/model/{quote(refused_id, safe=safe)}/{path}", converse_request("Hi"))
    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"] == ERROR_TYPE
    assert response.json() == {"message": ON_DEMAND_REFUSAL.format(model=model)}
    profile = f"us.{model}"
    if arn:
        profile = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{profile}"
    answered = sim.post(f"/model/{quote(profile, safe=safe)}/{path}", converse_request("Hi"))
    assert answered.status_code == 200, answered.text


def test_a_regional_simulator_refuses_a_signature_for_another_region(make_sim: Any, prompt: str) -> None:
    """`costkeeper simulate --sim-region eu-west-1` stands for that Region's endpoint, as Bedrock's is."""
    sim = make_sim(region="eu-west-1")
    eu = sim.client(region="eu-west-1")
    assert _converse(eu, "eu.anthropic.claude-haiku-4-5-20251001-v1:0", prompt)["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(ClientError) as caught:
        _converse(sim.client(region="us-east-1"), "us.anthropic.claude-haiku-4-5-20251001-v1:0", prompt)
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] == "InvalidSignatureException" and "scoped to a valid region" in error["Error"]["Message"]
