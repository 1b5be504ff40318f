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


# Open requests of one service in the cells around a point, for the tenants named, oldest
# first. Built once, because it runs in every POST with a location. Only the columns the
# distance check and the link need are read: candidates can be many, and the full row carries
# every encrypted field.
_COLUMNS = ServiceRequest.__table__.c
_OPEN_NEARBY = (
    select(
        _COLUMNS.id,
        _COLUMNS.lat,
        _COLUMNS.lon,
        _COLUMNS.h3_cell,
        _COLUMNS.requested_at,
        _COLUMNS.duplicate_of,
    )
    .where(
        _COLUMNS.tenant_id.in_(bindparam("tenant_ids", expanding=True)),
        _COLUMNS.service_code == bindparam("service_code"),
        _COLUMNS.h3_cell.in_(bindparam("cells", expanding=True)),
        _COLUMNS.status != "closed",
    )
    .order_by(_COLUMNS.requested_at, _COLUMNS.id)
    .limit(MAX_CANDIDATES)
)
_OPEN_NEARBY_BEFORE = _OPEN_NEARBY.where(_COLUMNS.requested_at < bindparam("before"))


def _search(
    session: Session,
    tenant_ids: list[str],
    service_code: str,
    lat: float,
    lon: float,
    radius_m: float,
    *,
    exclude: str,
    before: datetime | None = None,
) -> str | None:
    """Return the id the oldest open request within the radius links to, or None.

    The statement runs on the session's connection, past the ORM's tenant criteria, so the
    callers pass only tenants the session may read.
    """
    params = {
        "tenant_ids": tenant_ids,
        "service_code": service_code,
        "cells": geo.cells_within(lat, lon, radius_m),
        "before": before,
    }
    statement = _OPEN_NEARBY if before is None else _OPEN_NEARBY_BEFORE
    with session.connection().execute(statement, params) as rows:
        match = _oldest_within(rows, lat, lon, radius_m, exclude)
    return None if match is None else (match.duplicate_of or match.id)


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
    readable = readable_tenant(session, tenant.id)
    if readable is None:
        return None
    radius = duplicate_radius_m(tenant)
    original = _search(session, [readable], service_code, lat, lon, radius, exclude=exclude)
    if original is None:
        return None
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
        original = _search(
            session, others, service_code, lat, lon, radius, exclude=exclude, before=before
        )
    if original is not None:
        DUPLICATES_LINKED.labels(tenant=tenant.id, scope="region").inc()
        log.info("request_regional_duplicate_found", request_id=exclude, duplicate_of=original)
    return original
