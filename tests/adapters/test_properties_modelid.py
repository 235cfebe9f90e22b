"""Properties of model identity (issue #9): ARNs and inference profiles down to
the base model, however the client spelled them in the path.

`tests/proxy/test_parser_properties.py` covers `parse_route` on hostile paths
and the botocore encoding of plain ids; this covers the ARN forms (BEDROCK_WIRE.md
§1.2) and the other path spellings. `base_model_id` and `family_of` document no
error: they answer for any string.
"""

from __future__ import annotations

import string
from urllib.parse import quote

from hypothesis import example, given
from hypothesis import strategies as st

from adapters import FAMILIES, family_of
from adapters.modelid import base_model_id, encode_model_id, is_valid_model_id
from proxy.routing import parse_route
from tests.adapters.strategies import fuzz

PROPERTY = fuzz(150)
_GEO = ("", "us.", "eu.", "apac.", "jp.", "au.", "ca.", "us-gov.", "global.")
_KNOWN = ("anthropic.claude-sonnet-4-5-20250929-v1:0", "amazon.nova-lite-v1:0", "meta.llama3-8b-instruct-v1:0",
          "amazon.titan-text-express-v1", "cohere.command-r-v1:0", "mistral.mistral-large-2407-v1:0",
          "ai21.jamba-1-5-mini-v1:0", "deepseek.r1-v1:0", "openai.gpt-oss-20b-1:0", "writer.palmyra-x5-v1:0")
# ARN fields hold no ":"; a model id may hold ":" and "/".
arn_fields = st.text(alphabet=string.ascii_lowercase + string.digits + "-", max_size=14)
model_ids = st.one_of(
    st.sampled_from(_KNOWN),
    st.text(alphabet=string.ascii_letters + string.digits + "._:/+-", min_size=1, max_size=60),
).filter(lambda model: is_valid_model_id(model) and not model.startswith("arn:"))


@PROPERTY
@given(geo=st.sampled_from(_GEO), model=model_ids, kind=st.sampled_from(["foundation-model", "inference-profile"]),
       partition=arn_fields, region=arn_fields, account=arn_fields)
@example(geo="jp.", model="x", kind="inference-profile", partition="aws", region="", account="")
def test_an_arn_names_the_model_it_wraps(
    geo: str, model: str, kind: str, partition: str, region: str, account: str
) -> None:
    profile = geo + model
    arn = f"arn:{partition}:bedrock:{region}:{account}:{kind}/{profile}"
    assert base_model_id(arn) == base_model_id(profile)
    assert family_of(arn) == family_of(profile) == family_of(base_model_id(profile))
    if is_valid_model_id(arn):
        for path in _spellings(arn):
            route = parse_route("POST", f"/model/{path}/invoke")
            assert route.model_id == arn


def _spellings(model_id: str) -> list[str]:
    """botocore's encoding, raw colons (the Anthropic SDK), everything encoded;
    a "/" is always `%2F`, or it would split the path."""
    return [encode_model_id(model_id), quote(model_id, safe=":"), quote(model_id, safe="")]


@PROPERTY
@given(kind=st.sampled_from(["application-inference-profile", "provisioned-model", "custom-model",
                             "imported-model", "foundation-model", "inference-profile", ""]),
       resource=st.text(alphabet=string.ascii_letters + string.digits + "-", max_size=20),
       region=arn_fields, account=arn_fields)
def test_an_arn_that_names_no_model_is_kept_whole(kind: str, resource: str, region: str, account: str) -> None:
    arn = f"arn:aws:bedrock:{region}:{account}:{kind}/{resource}"
    if kind in ("foundation-model", "inference-profile") and resource:
        return  # names a model: the test above
    assert base_model_id(arn) == arn
    assert family_of(arn) == "generic"


@fuzz(200)
@given(st.one_of(st.text(max_size=80), st.builds("arn:{}".format, st.text(max_size=60)),
                 st.builds("{}{}".format, st.sampled_from(_GEO), st.text(max_size=20))))
def test_any_string_has_a_base_and_a_family(model_id: str) -> None:
    base = base_model_id(model_id)
    assert isinstance(base, str) and (base or not model_id)
    assert family_of(model_id) in FAMILIES
    if is_valid_model_id(model_id):
        for path in _spellings(model_id):
            assert parse_route("POST", f"/model/{path}/converse-stream").model_id == model_id
