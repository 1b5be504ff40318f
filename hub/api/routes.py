"""The list of routers the API serves. Each feature adds its router here."""

from __future__ import annotations

from fastapi import FastAPI


def include_all(app: FastAPI) -> None:
    from hub.api import health

    app.include_router(health.router)
