"""CORS for the Open311 API, so that browser apps on the origins in `HUB_CORS_ORIGINS` can call
it. Other paths, the staff API among them, get no CORS headers.

Starlette's CORSMiddleware responds to preflight OPTIONS requests and adds the headers to other
responses. Credentials (cookies, HTTP authentication) are never allowed: the Open311 API takes
its api_key as a form field, not as a credential a browser keeps.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

# GET reads are public. POST calls need an api_key, so allowing them from a listed origin
# grants nothing that the key does not.
ALLOWED_METHODS = ("GET", "POST")
# Request headers beyond the CORS-safelisted ones (Accept, Accept-Language, Content-Language,
# Content-Type) that a browser app may send.
ALLOWED_HEADERS = ("Idempotency-Key", "X-Request-Id")
# Response headers beyond the safelisted ones that a browser app may read. `Retry-After` gives
# an app over its POST limit the seconds to wait before it sends again.
EXPOSED_HEADERS = ("X-Request-Id", "Retry-After")
# Seconds a browser may reuse a preflight response.
PREFLIGHT_MAX_AGE_SECONDS = 600


class PathCORSMiddleware:
    """Apply CORSMiddleware to the requests whose path starts with `prefix`, and pass the
    others on unchanged."""

    def __init__(self, app: ASGIApp, *, prefix: str, origins: Sequence[str]) -> None:
        self.app = app
        self.prefix = prefix
        self.cors = CORSMiddleware(
            app,
            allow_origins=tuple(origins),
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            allow_credentials=False,
            expose_headers=EXPOSED_HEADERS,
            max_age=PREFLIGHT_MAX_AGE_SECONDS,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
