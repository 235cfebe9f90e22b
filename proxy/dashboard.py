"""`GET /dashboard` on the admin port: one self-contained page over the usage API.

The page itself reveals nothing and needs no token; its script takes the admin
token from `?token=` (or asks once, kept in sessionStorage) and calls `/v1/…`.
Inline CSS and JS only, so it works offline and behind strict egress rules.
"""

from __future__ import annotations

import functools
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

__all__ = ["dashboard_route"]

#: The page calls only its own origin; no CDN, no inline event handlers; no other site
#: may frame it (clickjacking the token form).
_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'")


@functools.cache
def _page() -> str:
    return files("proxy").joinpath("static/dashboard.html").read_text(encoding="utf-8")


async def _dashboard(_request: Request) -> HTMLResponse:
    return HTMLResponse(_page(), headers={
        "Content-Security-Policy": _CSP, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
    })


def dashboard_route() -> Route:
    return Route("/dashboard", _dashboard)
