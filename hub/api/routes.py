"""The list of routers the API serves. Each feature adds its router here."""

from __future__ import annotations

from fastapi import FastAPI


def include_all(app: FastAPI) -> None:
    from hub.api import health

    # Open311 first: FastAPI tries routes in order, and its calls are the most frequent.
    _include_open311(app)
    app.include_router(health.router)
    _include_overflow(app)
    _include_alerts(app)


def _include_open311(app: FastAPI) -> None:
    from hub.api.runtime import active_relay
    from hub.open311 import router as open311
    from hub.requests import api as requests_api
    from hub.requests.health import IntakeDegradedCheck

    def relay_healthy() -> bool:
        relay = active_relay()
        return relay is None or relay.healthy

    open311.install(app, degraded=IntakeDegradedCheck(relay_healthy))
    app.include_router(requests_api.router)


def _include_overflow(app: FastAPI) -> None:
    from failover import api as overflow_api

    app.include_router(overflow_api.router)


def _include_alerts(app: FastAPI) -> None:
    from hub.alerts import api as alerts_api

    app.include_router(alerts_api.router)
