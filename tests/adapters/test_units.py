"""Units billed other than in tokens: job sizes from StartAsyncInvoke model inputs,
text units from ApplyGuardrail responses."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.units import GUARDRAIL_POLICIES, Units, guardrail_units, job_units

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=24), children, max_size=4),
    max_leaves=20,
)


@pytest.mark.parametrize(
    ("model_input", "expected"),
    [
        # Nova Reel: one shot, automated multi-shot, manual multi-shot (6 s a shot).
        ({"taskType": "TEXT_VIDEO", "videoGenerationConfig": {"durationSeconds": 6}}, Units(seconds=6)),
        ({"taskType": "MULTI_SHOT_AUTOMATED", "videoGenerationConfig": {"durationSeconds": 120}}, Units(seconds=120)),
        ({"taskType": "MULTI_SHOT_MANUAL", "multiShotManualParams": {"shots": [{"text": "a"}, {"text": "b"}]},
          "videoGenerationConfig": {"fps": 24}}, Units(seconds=12)),
        # Luma Ray: duration as "5s".
        ({"prompt": "waves", "duration": "9s", "resolution": "720p"}, Units(seconds=9)),
        # Nova Canvas / Titan Image: numberOfImages, 1 unless said.
        ({"taskType": "TEXT_IMAGE", "imageGenerationConfig": {"numberOfImages": 3}}, Units(images=3)),
        ({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a cat"}}, Units(images=1)),
        # Nothing to read, or nonsense: no units (a priced model's job is then refused).
        ({"taskType": "TEXT_VIDEO", "videoGenerationConfig": {"durationSeconds": "six"}}, Units()),
        ({"taskType": "TEXT_VIDEO", "videoGenerationConfig": {"durationSeconds": True}}, Units()),
        ({"videoGenerationConfig": {"durationSeconds": -6}}, Units()),
        ({"duration": "forever"}, Units()),
        ([1, 2], Units()),
        (None, Units()),
    ],
)
def test_job_units(model_input: Any, expected: Units) -> None:
    assert job_units(model_input) == expected


def test_guardrail_units_read_every_policy_and_skip_the_free_ones() -> None:
    usage = {"topicPolicyUnits": 2, "contentPolicyUnits": 2, "wordPolicyUnits": 2,
             "sensitiveInformationPolicyUnits": 2, "sensitiveInformationPolicyFreeUnits": 7,
             "contextualGroundingPolicyUnits": 0, "contentPolicyImageUnits": 1, "automatedReasoningPolicies": 1}
    units = guardrail_units({"usage": usage, "action": "NONE"})
    assert dict(units.text_units) == {"topic": 2, "content": 2, "word": 2, "sensitive_information": 2,
                                      "contextual_grounding": 0}
    assert units.images == 1 and units.seconds is None
    assert units.amounts() == {"text:topic": 2, "text:content": 2, "text:word": 2,
                               "text:sensitive_information": 2, "text:contextual_grounding": 0, "image": 1}
    assert guardrail_units({"usage": {"topicPolicyUnits": -1, "contentPolicyUnits": "2"}}) == Units()
    assert guardrail_units({"action": "NONE"}) == guardrail_units(None) == Units()


@given(JSON)
def test_any_json_reads_without_error_to_non_negative_units(document: Any) -> None:
    for units in (job_units(document), guardrail_units(document), guardrail_units({"usage": document})):
        assert all(amount >= 0 for amount in units.amounts().values())
        assert set(units.text_units) <= set(GUARDRAIL_POLICIES)
