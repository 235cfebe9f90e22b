"""Who may read the admin port: every route × {no token, wrong token, right token,
token in the query} × {admin token configured or not} × {metrics_public,
healthz_public}, against real proxy processes.

Expected: `/dashboard` (and its script and style sheet) is an inert page and always answers; `/healthz` and
`/readyz` answer unless `observability.healthz_public: false`, `/metrics` unless
`metrics_public: false`, and then only to `Authorization: Bearer <token>`; the
usage API always needs that header, so with no token configured it is closed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import Process, Proxy, _spawn, costkeeper, free_port, start_simulator

TOKEN = "admin-matrix-token-0123456789abcdef"
ORG = "admin-matrix-org"
CONFIGS = {
    # name: (admin token configured, metrics_public, healthz_public)
    "token": (True, True, True),
    "token-private": (True, False, False),
    "no-token": (False, True, True),
    "no-token-private": (False, False, False),
}
ROUTES = ["/healthz", "/readyz", "/metrics", "/dashboard", "/dashboard.js", "/dashboard.css", "/v1/usage", "/v1/quotas",
          "/v1/rates?model=amazon.nova-micro-v1:0"]
CREDENTIALS = {
    "none": {},
    "wrong": {"Authorization": "Bearer not-the-admin-token"},
    "right": {"Authorization": f"Bearer {TOKEN}"},
    "lowercase-scheme": {"Authorization": f"bearer {TOKEN}"},
    "basic": {"Authorization": f"Basic {TOKEN}"},
    "in-query": {"query": TOKEN},
}


def start_admin_proxy(tmp: Path, upstream_url: str, name: str) -> Proxy:
    """`tests.processes.start_proxy`, but healthy once `/dashboard` answers: with
    `healthz_public: false` the usual `/healthz` check would wait for ever."""
    with_token, metrics_public, healthz_public = CONFIGS[name]
    port, admin_port = free_port(), free_port()
    store_path = tmp / f"store-{name}.db"
    config_path = tmp / f"config-{name}.yaml"
    config_path.write_text(json.dumps({
        "upstream": {"endpoint_url": upstream_url},
        "server": {"host": "127.0.0.1", "port": port, "admin_port": admin_port},
        "store": {"backend": "sqlite", "path": str(store_path)},
        "metering": {"flush_interval": 0.1},
        "auth": {"mode": "trust", "trust_org": ORG, "trust_app": "app"},
        "observability": {"metrics_public": metrics_public, "healthz_public": healthz_public},
    }))
    costkeeper("store", "init", "--config", str(config_path))
    env = {"AWS_ACCESS_KEY_ID": "AKIDSIMULATORTESTS01", "AWS_SECRET_ACCESS_KEY": "simulator-secret-for-tests-only"}
    if with_token:
        env["COSTKEEPER_ADMIN_TOKEN"] = TOKEN
    process = _spawn(["serve", "--config", str(config_path)], env, tmp / f"proxy-{name}.log",
                     f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}/dashboard")
    return Proxy(process.popen, process.url, process.log, f"http://127.0.0.1:{admin_port}", config_path, store_path)


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Proxy]]:
    tmp = tmp_path_factory.mktemp("security-admin")
    simulator: Process = start_simulator(tmp)
    started: dict[str, Proxy] = {}
    try:
        for name in CONFIGS:
            started[name] = proxy = start_admin_proxy(tmp, simulator.url, name)
            # Some usage, so an open endpoint would have something to reveal.
            response = _first_usage(proxy)
            assert response.status_code == 200, response.text
        yield started
    finally:
        for proxy in started.values():
            proxy.stop()
        simulator.stop()


def _first_usage(proxy: Proxy) -> httpx.Response:
    """One Converse call; the admin port (what start-up waited for) may answer a moment
    before the data port listens, so a refused connection is tried again."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return httpx.post(f"{proxy.url}/model/amazon.nova-micro-v1%3A0/converse", timeout=10,
                              json={"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def expected_open(config: str, route: str, credential: str) -> bool:
    with_token, metrics_public, healthz_public = CONFIGS[config]
    authorized = with_token and credential in ("right", "lowercase-scheme")
    if route.startswith("/dashboard"):
        return True
    if route in ("/healthz", "/readyz"):
        return healthz_public or authorized
    if route == "/metrics":
        return metrics_public or authorized
    return authorized


def get(proxy: Proxy, route: str, credential: dict[str, str]) -> httpx.Response:
    url = proxy.admin_url + route
    if "query" in credential:
        url += ("&" if "?" in url else "?") + f"token={credential['query']}"
    return httpx.get(url, headers={k: v for k, v in credential.items() if k != "query"}, timeout=10)


@pytest.mark.parametrize("credential", list(CREDENTIALS))
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_admin_route_access(proxies: dict[str, Proxy], config: str, route: str, credential: str) -> None:
    response = get(proxies[config], route, CREDENTIALS[credential])
    if expected_open(config, route, credential):
        assert response.status_code == 200, response.text
        if route.startswith("/v1/usage"):
            assert any(row["org"] == ORG for row in response.json()["rows"])
    else:
        assert response.status_code == 401, response.text
        body: Any = response.json()
        assert body == {"message": "A valid admin token is required."}
        assert ORG not in response.text and "costkeeper_" not in response.text
    assert TOKEN not in response.text and TOKEN not in str(response.headers)


def test_a_closed_health_check_answers_with_the_token(proxies: dict[str, Proxy]) -> None:
    """What a probe with the token header sees: the same health and readiness."""
    proxy = proxies["token-private"]
    assert get(proxy, "/healthz", CREDENTIALS["right"]).text == "ok\n"
    assert get(proxy, "/readyz", CREDENTIALS["right"]).json()["ready"] is True


def test_the_dashboard_page_reveals_nothing(proxies: dict[str, Proxy]) -> None:
    page = get(proxies["token"], "/dashboard", {"query": TOKEN})
    assert ORG not in page.text and TOKEN not in page.text
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
