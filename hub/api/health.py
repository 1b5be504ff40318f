"""Liveness and readiness endpoints.

`/healthz` returns 200 while the process is alive. `/readyz` returns 200 when the process can
take work, because the database accepts a query and the outbox relay can reach the broker.
Otherwise it returns 503 with the failing checks.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from hub.core.db import get_engine

router = APIRouter(tags=["health"])


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
        checks["broker"] = "failed: the outbox relay cannot publish to the broker"
    else:
        checks["broker"] = "ok"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )
