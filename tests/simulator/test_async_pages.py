"""ListAsyncInvokes pages like Bedrock: maxResults a page, newest first, nextToken while more remain."""

from __future__ import annotations

from typing import Any

import pytest

from tests.simulator.harness import SimServer


def test_list_async_invokes_pages(make_sim: Any) -> None:
    sim: SimServer = make_sim()
    bedrock = sim.client()
    output = {"s3OutputDataConfig": {"s3Uri": "s3://b/p"}}
    started = [bedrock.start_async_invoke(modelId="amazon.nova-reel-v1:1", modelInput={"taskType": "TEXT_VIDEO"},
                                          outputDataConfig=output)["invocationArn"] for _ in range(5)]
    first = bedrock.list_async_invokes(maxResults=2)
    assert len(first["asyncInvokeSummaries"]) == 2 and first["nextToken"]
    pages = list(bedrock.get_paginator("list_async_invokes").paginate(PaginationConfig={"PageSize": 2}))
    assert [len(page["asyncInvokeSummaries"]) for page in pages] == [2, 2, 1]
    assert "nextToken" not in pages[-1]
    listed = [job["invocationArn"] for page in pages for job in page["asyncInvokeSummaries"]]
    assert listed == list(reversed(started))  # newest first
    with pytest.raises(bedrock.exceptions.ValidationException):
        bedrock.list_async_invokes(nextToken="not-a-token")
