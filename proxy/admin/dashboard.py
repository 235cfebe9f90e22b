"""`GET /dashboard` on the admin port: one self-contained page over the usage API.

The page itself reveals nothing and needs no token; its script takes the admin
token from `?token=` (or asks once, kept in sessionStorage) and calls `/v1/…`.
Its script and style sheet are served here too (`/dashboard.js`, `/dashboard.css`),
and its charts are inline SVG drawn by that script: no CDN, so it works offline and
behind strict egress rules, and the CSP allows nothing inline.
"""

from __future__ import annotations

import functools
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["dashboard_routes"]

#: Only this origin's own script, style sheet and API; no inline script or style attribute
#: (the script styles through the CSSOM, which the CSP does not govern); no other site may
#: frame the page (clickjacking the token form).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
#: path → (file in proxy/admin/static, media type)
_FILES = {
    "/dashboard": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}


@functools.cache
def _read(name: str) -> bytes:
    return files("proxy.admin").joinpath(f"static/{name}").read_bytes()


def _route(path: str, name: str, media_type: str) -> Route:
    async def endpoint(_request: Request) -> Response:
        return Response(_read(name), media_type=media_type, headers={
            "Content-Security-Policy": CSP, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        })
    return Route(path, endpoint)


def dashboard_routes() -> list[Route]:
    return [_route(path, name, media_type) for path, (name, media_type) in _FILES.items()]
