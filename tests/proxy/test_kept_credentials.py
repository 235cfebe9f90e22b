"""The proxy's frozen credentials are asked for once a second, not once per request
(`proxy/kept_credentials.py`): botocore's expiry check still decides every refresh.

The clock is injected: nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from aiobotocore.credentials import AioRefreshableCredentials
from dateutil.tz import tzutc

from proxy.kept_credentials import KeptFrozenCredentials

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _refreshing(expires_in: dt.timedelta) -> tuple[AioRefreshableCredentials, list[int]]:
    """aiobotocore's refreshable credentials (as IRSA or an instance role gives them), each
    refresh a new secret valid for `expires_in`; and the list of refreshes made."""
    refreshes: list[int] = []

    async def refresh() -> dict[str, Any]:
        refreshes.append(len(refreshes))
        return {"access_key": "ASIAKEPT", "secret_key": f"secret-{len(refreshes)}", "token": "token",
                "expiry_time": (dt.datetime.now(tzutc()) + expires_in).isoformat()}

    metadata = {"access_key": "ASIAKEPT", "secret_key": "secret-0", "token": "token",
                "expiry_time": (dt.datetime.now(tzutc()) + expires_in).isoformat()}
    return AioRefreshableCredentials.create_from_metadata(metadata, refresh, "assume-role-with-web-identity"), refreshes


async def test_the_frozen_set_is_asked_for_once_a_second() -> None:
    credentials, refreshes = _refreshing(dt.timedelta(hours=1))
    clock = Clock()
    kept = KeptFrozenCredentials(credentials, clock=clock)
    asked: list[int] = []
    frozen_of = credentials.get_frozen_credentials

    async def counted() -> Any:
        asked.append(1)
        return await frozen_of()

    credentials.get_frozen_credentials = counted  # type: ignore[method-assign]
    first = await kept.get_frozen_credentials()
    clock.now += 0.999
    assert await kept.get_frozen_credentials() is first and len(asked) == 1
    clock.now += 0.001
    again = await kept.get_frozen_credentials()
    assert len(asked) == 2 and again == first and not refreshes
    assert (first.access_key, first.secret_key, first.token) == ("ASIAKEPT", "secret-0", "token")
    assert kept.method == "assume-role-with-web-identity"


async def test_botocore_still_refreshes_credentials_near_their_expiry() -> None:
    """Credentials within botocore's refresh window (15 minutes before expiry) are
    refreshed at the next ask, a second later at most: the new secret is handed out."""
    credentials, refreshes = _refreshing(dt.timedelta(minutes=5))
    clock = Clock()
    kept = KeptFrozenCredentials(credentials, clock=clock)
    first = await kept.get_frozen_credentials()
    assert refreshes == [0] and first.secret_key == "secret-1"  # refreshed at once: inside the window
    assert await kept.get_frozen_credentials() is first
    clock.now += 1.0
    assert (await kept.get_frozen_credentials()).secret_key == "secret-2"


async def test_a_failure_is_not_kept() -> None:
    class Failing:
        calls = 0

        async def get_frozen_credentials(self) -> str:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("the metadata service did not answer")
            return "frozen"

    failing = Failing()
    kept = KeptFrozenCredentials(failing, clock=Clock())
    with pytest.raises(RuntimeError):
        await kept.get_frozen_credentials()
    assert await kept.get_frozen_credentials() == "frozen" and failing.calls == 2
    assert KeptFrozenCredentials.around(None) is None and kept.method == "unknown"
