"""The baselines for `hub bench intake` and `hub bench overflow`: bare FastAPI endpoints on
the hub's paths.

They parse the same body and return JSON of the same shape, but touch no database, so the
difference between the hub's figures and theirs is the cost of the hub's own work.
"""

from __future__ import annotations

import itertools

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def create_app() -> FastAPI:
    app = FastAPI()
    counter = itertools.count(1)

    @app.post("/open311/v2/requests.json")
    async def post_request(request: Request) -> JSONResponse:
        form = await request.form()
        request_id = f"B{next(counter):09d}"
        body = [{"service_request_id": request_id, "service_notice": "", "account_id": None}]
        if not form.get("service_code"):
            return JSONResponse([{"code": 400, "description": "service_code"}], status_code=400)
        return JSONResponse(body, status_code=201)

    @app.post("/api/v1/overflow/contacts")
    async def post_contact(request: Request) -> JSONResponse:
        body = await request.json()
        decision = {
            "contact_id": f"C{next(counter):09d}",
            "target": "home",
            "center_id": None,
            "reason": "normal" if body.get("service_group") else "invalid",
        }
        return JSONResponse(decision, status_code=201)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/open311/v2/requests/{request_id}.json")
    async def get_request(request_id: str) -> JSONResponse:
        return JSONResponse(
            [
                {
                    "service_request_id": request_id,
                    "status": "open",
                    "service_code": "REQPOTHL",
                    "requested_datetime": "2026-12-04T12:00:00-05:00",
                    "lat": 42.36,
                    "long": -71.06,
                }
            ]
        )

    return app
