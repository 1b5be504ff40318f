"""Liveness and readiness endpoints.

`/healthz` returns 200 while the process is alive and serving HTTP: the liveness probe.

`/readyz` is the load balancer's probe. It returns 200 while this process can serve Open311,
which needs the database: every accepted request and its tasks are written there first (the
transactional outbox). When the outbox relay cannot publish to the broker, the process still
accepts requests, so `/readyz` returns 200 with `"status": "degraded"` and the failing check.
When a database query fails it returns 503 with `"status": "not ready"`.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from hub.core.db import get_engine

router = APIRouter(tags=["health"])

BROKER_FAILED = (
    "failed: the outbox relay cannot publish to the broker; requests are accepted and wait in "
    "the outbox"
)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz() -> JSONResponse:
    from hub.api.runtime import active_relay

    checks: dict[str, str] = {}
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"failed: {type(exc).__name__}"
    relay = active_relay()
    if relay is not None and not relay.broker_ok:
        checks["broker"] = BROKER_FAILED
    else:
        checks["broker"] = "ok"

    if checks["database"] != "ok":
        status, code = "not ready", 503
    elif checks["broker"] != "ok":
        status, code = "degraded", 200
    else:
        status, code = "ready", 200
    return JSONResponse({"status": status, "checks": checks}, status_code=code)
