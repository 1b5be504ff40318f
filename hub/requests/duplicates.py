"""Duplicate linking: a new request is linked to an open request of the same service nearby.

Candidates come from the indexed `(tenant_id, service_code, h3_cell)` lookup over the cells that
can hold points within the radius; the exact distance then decides. Within a region the search
also covers the other tenants' open requests (a pothole on a city border is reported to both).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import h3
import structlog
from sqlalchemy import Row, bindparam, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from hub.core.db import readable_tenant, unit_of_work
from hub.core.tenancy import SystemContext
from hub.requests import geo
from hub.requests.catalog import TenantSnapshot
from hub.requests.metrics import DUPLICATES_LINKED
from hub.requests.models import ServiceRequest

log = structlog.get_logger(__name__)

DEFAULT_RADIUS_M = 50.0
# Candidates examined per lookup; a busy corner with more open reports links to the oldest.
MAX_CANDIDATES = 200


def duplicate_radius_m(_tenant: TenantSnapshot) -> float:
    """Link radius in metres; the same for every tenant until manifests carry one."""
    return DEFAULT_RADIUS_M


def point_of(row: Row) -> tuple[float, float]:
    if row.lat is not None and row.lon is not None:
        return row.lat, row.lon
    # A location-sensitive request publishes no exact point. Its storage cell's centre is
    # within about 200 m of the point, so matching works at that precision.
    return h3.cell_to_latlng(row.h3_cell)


def _oldest_within(
    rows: Iterable[Row], lat: float, lon: float, radius_m: float, exclude: str
) -> Row | None:
    """Return the first row within the radius: the oldest, as the rows come by (time, id).

    Linking to the original report makes a chain of duplicates point at one request. The
    search stops at the first match, because a busy corner has many open reports.
    """
    for row in rows:
        if row.id != exclude and geo.distance_m(lat, lon, *point_of(row)) <= radius_m:
            return row
    return None


# Only the columns the distance check and the link need: candidates can be many, and the full
# row carries every encrypted field.
_CANDIDATE_COLUMNS = (
    ServiceRequest.id,
    ServiceRequest.lat,
    ServiceRequest.lon,
    ServiceRequest.h3_cell,
    ServiceRequest.requested_at,
    ServiceRequest.duplicate_of,
)


def _open_nearby(service_code: str, lat: float, lon: float, radius_m: float):
    return (
        select(*_CANDIDATE_COLUMNS)
        .where(
            ServiceRequest.service_code == service_code,
            ServiceRequest.h3_cell.in_(geo.cells_within(lat, lon, radius_m)),
            ServiceRequest.status != "closed",
        )
        .order_by(ServiceRequest.requested_at, ServiceRequest.id)
        .limit(MAX_CANDIDATES)
    )


# The same search within one tenant, built once, as a Core statement: it runs in every POST
# with a location.
_COLUMNS = ServiceRequest.__table__.c
_TENANT_NEARBY = (
    select(*(_COLUMNS[column.key] for column in _CANDIDATE_COLUMNS))
    .where(
        _COLUMNS.tenant_id == bindparam("tenant_id"),
        _COLUMNS.service_code == bindparam("service_code"),
        _COLUMNS.h3_cell.in_(bindparam("cells", expanding=True)),
        _COLUMNS.status != "closed",
    )
    .order_by(_COLUMNS.requested_at, _COLUMNS.id)
    .limit(MAX_CANDIDATES)
)


def find_duplicate(
    session: Session,
    tenant: TenantSnapshot,
    service_code: str,
    lat: float,
    lon: float,
    *,
    exclude: str,
) -> str | None:
    """Return the id of the tenant's oldest open request of the service within the radius."""
    radius = duplicate_radius_m(tenant)
    readable = readable_tenant(session, tenant.id)
    if readable is None:
        return None
    params = {
        "tenant_id": readable,
        "service_code": service_code,
        "cells": geo.cells_within(lat, lon, radius),
    }
    with session.connection().execute(_TENANT_NEARBY, params) as rows:
        match = _oldest_within(rows, lat, lon, radius, exclude)
    if match is None:
        return None
    original = match.duplicate_of or match.id
    DUPLICATES_LINKED.labels(tenant=tenant.id, scope="tenant").inc()
    log.info("request_duplicate_found", request_id=exclude, duplicate_of=original)
    return original


def find_regional_duplicate(
    engine: Engine | None,
    tenant: TenantSnapshot,
    region_tenant_ids: list[str],
    service_code: str,
    lat: float,
    lon: float,
    *,
    exclude: str,
    before: datetime | None = None,
) -> str | None:
    """Search the other tenants of the tenant's region for an open duplicate.

    Reads across tenants in its own system-scoped session, so call it outside the intake
    transaction (the routing task does). Service codes must match exactly across tenants.
    With `before`, only requests filed earlier are candidates.
    """
    others = [tenant_id for tenant_id in region_tenant_ids if tenant_id != tenant.id]
    if not others:
        return None
    radius = duplicate_radius_m(tenant)
    scope = SystemContext("regional duplicate search", actor=f"tenant:{tenant.id}")
    with unit_of_work(scope, engine=engine, write=False) as session:
        statement = _open_nearby(service_code, lat, lon, radius).where(
            ServiceRequest.tenant_id.in_(others)
        )
        if before is not None:
            statement = statement.where(ServiceRequest.requested_at < before)
        match = _oldest_within(session.execute(statement).all(), lat, lon, radius, exclude)
        original = (match.duplicate_of or match.id) if match is not None else None
    if original is not None:
        DUPLICATES_LINKED.labels(tenant=tenant.id, scope="region").inc()
        log.info("request_regional_duplicate_found", request_id=exclude, duplicate_of=original)
    return original
