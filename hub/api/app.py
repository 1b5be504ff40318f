"""FastAPI application factory: routers, error mapping, metrics and request limits.

Errors are mapped in one place. `HubError` subclasses carry their status, and validation
errors name the fields without echoing the request body. Anything unexpected becomes a
generic 500 that names the request id, and its traceback is logged on the server only, with
that id. Under `/open311/` errors use the GeoReport v2 error list format in the representation
the path asks for (`.xml` or `.json`).
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
import structlog
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from prometheus_client import Counter, Histogram
from sqlalchemy.exc import OperationalError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.core.db import close_async_readers
from hub.core.errors import PLAIN_CODE, HubError, PayloadTooLarge
from hub.core.logging import RepeatLimiter, bind_ids, clear_ids, configure_logging
from hub.core.metrics import HTTP_LATENCY, HTTP_REQUESTS, render_latest
from hub.core.settings import Settings, get_settings
from privacy.fields import record_pending_usage

log = structlog.get_logger(__name__)
# During a database outage every request fails the same way: one line per error class per 10 s.
_database_down_log = RepeatLimiter(10.0)

# A function that renders an error response from the request, the status, the error code and
# the error's messages. A format that lists errors gives each message its own entry.
ErrorRenderer = Callable[[Request, int, str, Sequence[str]], Response]


def _json_error(_request: Request, status: int, code: str, messages: Sequence[str]) -> Response:
    message = "; ".join(messages)
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _renderer_for(request: Request) -> ErrorRenderer:
    renderers: list[tuple[str, ErrorRenderer]] = request.app.state.error_renderers
    for prefix, renderer in renderers:
        if request.url.path.startswith(prefix):
            return renderer
    return _json_error


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HubError)
    async def _hub_error(request: Request, exc: HubError) -> Response:
        response = _renderer_for(request)(request, exc.status, exc.code, exc.messages)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        message = validation_message(exc.errors())
        return _renderer_for(request)(request, 400, "invalid", [message])

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette's Allow header names the methods of only the first route on the path,
            # such as POST alone where GET and POST share it.
            allowed = ", ".join(_allowed_methods(request)) or headers.get("Allow", "")
            headers["Allow"] = allowed
            message = f"method {request.method} is not allowed on this path; use {allowed}"
        # The body limit of ObserveMiddleware raises 413 as an HTTPException for chunked bodies.
        code = PayloadTooLarge.code if exc.status_code == PayloadTooLarge.status else "http_error"
        response = _renderer_for(request)(request, exc.status_code, code, [message])
        response.headers.update(headers)
        return response

    @app.exception_handler(OperationalError)
    async def _database_down(request: Request, exc: OperationalError) -> Response:
        error = type(exc).__name__
        _database_down_log.log(log.error, "database_unavailable", key=error, error=error)
        return _renderer_for(request)(
            request, 503, "unavailable", ["the database is unavailable; retry later"]
        )


# Pydantic error types whose message may quote the submitted value: a custom validator's.
_QUOTING_ERROR_TYPES = frozenset({"value_error", "assertion_error"})


def validation_message(errors: Sequence[Any]) -> str:
    """Describe request validation errors by field, in the order found, without the submitted
    values: a body may hold personal data. Pydantic's own messages name only what was expected."""
    parts: list[str] = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        kind = error.get("type", "")
        field = ".".join(location[1:])
        if kind == "json_invalid":
            # FastAPI gives the position in the location, pydantic's own parser in the message.
            if len(location) > 1:
                reason = f"near character {location[1]}"
            else:
                reason = str(error.get("msg", "")).removeprefix("Invalid JSON: ")
            part = f"the request body is not valid JSON ({reason}); send one JSON object"
        elif kind == "missing":
            part = f"{field} is missing"
        else:
            detail = "" if kind in _QUOTING_ERROR_TYPES else f": {error.get('msg', '')}"
            part = f"{field or 'the request body'} is invalid{detail}"
        if part not in parts:
            parts.append(part)
    return "; ".join(parts) or "the request is invalid"


def _allowed_methods(request: Request) -> list[str]:
    """Return the methods of every route whose path matches the request's, sorted."""
    methods: set[str] = set()
    # `iter_route_contexts` also lists the routes of included routers, with their prefixes.
    for route in iter_route_contexts(request.app.routes):
        path_regex = getattr(route, "path_regex", None)
        if path_regex is not None and path_regex.match(request.url.path):
            methods.update(route.methods or ())
    return sorted(methods)


def _route_template(scope: Scope) -> str:
    return getattr(scope.get("route"), "path", "unmatched")


def _request_id(headers: Headers) -> str:
    sent = headers.get("x-request-id")
    # Kept only when plain, so that it can go into logs, audit entries and error bodies as it is.
    if sent is not None and PLAIN_CODE.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


class ObserveMiddleware:
    """Pure ASGI middleware: request id, body size limit, request counts and latency.

    A plain ASGI class instead of `@app.middleware("http")`: that decorator runs every request
    through extra tasks and memory streams, which cost more than the hub's own work on a
    small GET.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes
        self._known_series: dict[tuple[str, str, int, str], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        # Routes record the tenant in `request.state`, which lives in this dict.
        state = scope.setdefault("state", {})
        request_id = state["request_id"] = _request_id(headers)
        bind_ids(request_id=request_id)
        started = time.perf_counter()
        status = 500
        responded = False
        request_id_header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status = message["status"]
                responded = True
                message["headers"] = [*message.get("headers", ()), request_id_header]
            await send(message)

        try:
            declared = headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.limit:
                request = Request(scope)
                response = _renderer_for(request)(
                    request,
                    PayloadTooLarge.status,
                    PayloadTooLarge.code,
                    [f"request body larger than {self.limit} bytes"],
                )
                await response(scope, receive, send_with_id)
            else:
                if not declared:
                    receive = self._limited(receive)
                await self.app(scope, receive, send_with_id)
        except Exception:
            # Handled here rather than by an app-wide handler, which Starlette runs outside
            # this middleware: its 500 had no X-Request-Id and its log line no request id.
            log.exception("unhandled_error", path_template=_route_template(scope))
            if responded:
                raise
            request = Request(scope)
            response = _renderer_for(request)(
                request,
                500,
                "internal",
                [f"internal error; give the operator request id {request_id}"],
            )
            await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            tenant = state.get("tenant_id") or "none"
            method = scope["method"]
            count, latency = self._series(route, method, status // 100, tenant)
            count.inc()
            latency.observe(elapsed)
            clear_ids()

    def _limited(self, receive: Receive) -> Receive:
        """Wrap `receive` of a body sent without Content-Length (chunked) so that it raises
        413 once the body passes the limit, before the rest of it is read into memory.

        The error is FastAPI's HTTPException, because FastAPI turns any other error raised
        while it reads a body parameter into a 400.
        """
        limit = self.limit
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(
                        PayloadTooLarge.status, detail=f"request body larger than {limit} bytes"
                    )
            return message

        return limited_receive

    def _series(
        self, route: str, method: str, status_class: int, tenant: str
    ) -> tuple[Counter, Histogram]:
        """Return the request counter and latency histogram of one label set.

        `labels()` checks and looks up its labels on every call, which cost more than the
        rest of this middleware. The label sets are bounded (route templates, methods, status
        classes and tenants), so the series are kept here once looked up.
        """
        key = (route, method, status_class, tenant)
        series = self._known_series.get(key)
        if series is None:
            series = self._known_series[key] = (
                HTTP_REQUESTS.labels(
                    route=route, method=method, status=f"{status_class}xx", tenant=tenant
                ),
                HTTP_LATENCY.labels(route=route, method=method, tenant=tenant),
            )
        return series


# Allocations between young-generation collections. The default (700) makes a request that
# builds a few ORM rows and a response run several collections.
GC_YOUNG_THRESHOLD = 10_000


def _tune_collector() -> None:
    """Move start-up objects out of the collector's reach and collect the young less often.

    Full collections otherwise walk every module, route and mapper loaded at start, and each
    one stalls the process for tens of milliseconds: a latency tail no request caused.
    """
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), middle, old)


def create_app(
    settings: Settings | None = None, *, start_relay: bool = True, start_board: bool = True
) -> FastAPI:
    """Build the API. At start it runs the outbox relay (`start_relay`) and the overflow live
    board (`start_board`). Tests turn off what they drive themselves."""
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from hub.api import runtime

        app.state.runtime = runtime.start(
            settings, start_relay=start_relay, start_board=start_board
        )
        _tune_collector()
        # FastAPI runs blocking endpoints in anyio's default thread pool (40 threads).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        try:
            yield
        finally:
            await close_async_readers()
            app.state.runtime.stop()
            # Encryption counts not recorded yet would be lost with the process.
            await anyio.to_thread.run_sync(record_pending_usage)

    app = FastAPI(
        title="Regional 311 hub",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.error_renderers = []
    _install_error_handlers(app)
    app.add_middleware(ObserveMiddleware, max_body_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        from hub.api.cors import PathCORSMiddleware
        from hub.open311.router import PREFIX

        # Added last, so it runs first: the errors ObserveMiddleware renders get CORS headers
        # too, and a browser app can read them.
        app.add_middleware(PathCORSMiddleware, prefix=PREFIX + "/", origins=settings.cors_origins)

    from hub.api.observability import install_collectors

    install_collectors()

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        body, content_type = render_latest()
        return Response(body, media_type=content_type)

    from hub.api import routes

    routes.include_all(app)
    return app
