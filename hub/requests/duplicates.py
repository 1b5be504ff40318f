"""Duplicate linking: a new request is linked to an open request of the same service nearby.

Candidates come from the indexed `(tenant_id, service_code, h3_cell)` lookup over the cells that
can hold points within the radius; the exact distance then decides. Within a region the search
also covers the other tenants' open requests (a pothole on a city border is reported to both).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import h3
import structlog
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Float,
    Integer,
    Row,
    Select,
    Text,
    any_,
    bindparam,
    column,
    func,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from hub.core.db import is_postgres, readable_tenant, unit_of_work
from hub.core.tenancy import SystemContext
from hub.requests import geo
from hub.requests.catalog import TenantSnapshot
from hub.requests.metrics import DUPLICATES_LINKED
from hub.requests.models import ServiceRequest

log = structlog.get_logger(__name__)

DEFAULT_RADIUS_M = 50.0
# Candidates examined per lookup; a busy corner with more open reports links to the oldest.
MAX_CANDIDATES = 200
# PostgreSQL's distance may differ from Python's in the last bits. The query keeps rows up to
# this much beyond the radius, and Python's check decides.
_DISTANCE_MARGIN_M = 0.001


def duplicate_radius_m(_tenant: TenantSnapshot) -> float:
    """Link radius in metres; the same for every tenant until manifests carry one."""
    return DEFAULT_RADIUS_M


def point_of(row: Row) -> tuple[float, float]:
    if row.lat is not None and row.lon is not None:
        return row.lat, row.lon
    # A location-sensitive request stores no cell, so it is never a candidate. One stored
    # before that rule has no exact public point; its cell's centre is within about 200 m.
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


def _open_nearby(service_code: ColumnElement[Any], in_cells: ColumnElement[bool]) -> Select:
    """Return the open requests of one service in some cells, for the tenants named, oldest
    first. Only the columns the distance check and the link need are read: candidates can be
    many, and the full row carries every encrypted field."""
    return (
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
            _COLUMNS.service_code == service_code,
            in_cells,
            _COLUMNS.status != "closed",
        )
        .order_by(_COLUMNS.requested_at, _COLUMNS.id)
    )


def _distance_sql(
    lat: ColumnElement[Any], lon: ColumnElement[Any], lat0: ColumnElement[Any], lon0: Any
) -> ColumnElement[float]:
    """Return the haversine distance in metres of `geo.distance_m` as a PostgreSQL expression."""
    p1, p2 = func.radians(lat0), func.radians(lat)
    half_lat = func.power(func.sin((p2 - p1) / 2), 2)
    half_lon = func.power(func.sin(func.radians(lon - lon0) / 2), 2)
    return (
        2
        * geo.EARTH_RADIUS_M
        * func.asin(func.sqrt(half_lat + func.cos(p1) * func.cos(p2) * half_lon))
    )


# The statements are built once, because they run in every POST with a location.
_COLUMNS = ServiceRequest.__table__.c
# Candidates around one point.
_OPEN_NEARBY = _open_nearby(
    bindparam("service_code"), _COLUMNS.h3_cell.in_(bindparam("cells", expanding=True))
).limit(MAX_CANDIDATES)
_OPEN_NEARBY_BEFORE = _OPEN_NEARBY.where(_COLUMNS.requested_at < bindparam("before"))
# Candidates around many points in one query (PostgreSQL): per row of `searches`, a JSON list
# of {"n", "service_code", "cells", "lat", "lon", "max_rows"}, the oldest open requests within
# the radius, or without a stored point, tagged with its `n`. PostgreSQL checks the distance,
# so a search whose rows have points needs one row: at a busy corner it used to return 200
# candidates, and reading them was a tenth of the CPU time of a batch of POSTs.
_SEARCHES = (
    func.jsonb_to_recordset(bindparam("searches", type_=JSONB))
    .table_valued(
        column("n", Integer),
        column("service_code", Text),
        column("cells", ARRAY(Text)),
        column("lat", Float),
        column("lon", Float),
        column("max_rows", Integer),
    )
    .render_derived(name="searches", with_types=True)
)
_CANDIDATES = (
    _open_nearby(_SEARCHES.c.service_code, _COLUMNS.h3_cell == any_(_SEARCHES.c.cells))
    .where(
        or_(
            _COLUMNS.lat.is_(None),
            _COLUMNS.lon.is_(None),
            _distance_sql(_COLUMNS.lat, _COLUMNS.lon, _SEARCHES.c.lat, _SEARCHES.c.lon)
            <= bindparam("radius_m") + _DISTANCE_MARGIN_M,
        )
    )
    .limit(_SEARCHES.c.max_rows)
    .lateral("candidates")
)
_OPEN_NEARBY_EACH = (
    select(_SEARCHES.c.n, *_CANDIDATES.c)
    .select_from(_SEARCHES.join(_CANDIDATES, true()))
    .order_by(_SEARCHES.c.n, _CANDIDATES.c.requested_at, _CANDIDATES.c.id)
)


# First key of the two-key advisory locks on search areas. The second is the hash of the
# tenant, service and storage cell. Another area with the same hash only waits longer.
_AREA_LOCK_CLASS = 311_0007
# Takes the locks in key order, so two transactions that lock some of the same areas wait for
# each other instead of deadlocking.
_LOCK_AREAS = text(
    "SELECT count(pg_advisory_xact_lock(:lock_class, key)) FROM "
    "(SELECT DISTINCT hashtext(area) AS key FROM unnest(CAST(:areas AS text[])) AS area "
    "ORDER BY key) AS keys"
)


def _lock_search_areas(
    session: Session,
    tenant_id: str,
    searches: list[tuple[int, dict[str, Any], float, float]],
    cells: dict[int, list[str]],
) -> None:
    """Lock the cells each search reads until the transaction ends (PostgreSQL).

    A search cannot see a request that another transaction has not committed yet. Two reports
    of one spot filed at the same moment in two API processes would then both miss each other.
    With the lock, the second search waits for the first transaction and finds its request.
    Two points within the radius each have the other's cell among the cells they search, so
    their searches always share a lock.
    """
    areas = [
        f"{tenant_id}|{row['service_code']}|{cell}"
        for n, row, _lat, _lon in searches
        for cell in cells[n]
    ]
    session.connection().execute(_LOCK_AREAS, {"lock_class": _AREA_LOCK_CLASS, "areas": areas})


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
    return _link_target(match)


def _link_target(match: Any) -> str | None:
    return None if match is None else (match.duplicate_of or match.id)


def _candidates_each(
    session: Session,
    tenant_id: str,
    searches: list[tuple[int, dict[str, Any], float, float]],
    cells: dict[int, list[str]],
    radius_m: float,
) -> dict[int, list[Row]]:
    """Return the stored candidates of each search by its position. PostgreSQL runs one
    query for all searches and leaves out the rows beyond the radius, SQLite one per search.

    For a new row with a stored point, PostgreSQL returns one row: the oldest open request
    within the radius or without a point. Such a row has the public point of its service, so its
    service's older requests have points too, unless the service's location rule changed. When
    the one row fails the exact check, the search runs again over every candidate.
    """
    found: dict[int, list[Row]] = {n: [] for n, _row, _lat, _lon in searches}
    if not is_postgres(session):
        for n, row, _lat, _lon in searches:
            found[n] = _nearby(session, tenant_id, row["service_code"], cells[n])
        return found
    max_rows = {
        n: 1 if row.get("lat") is not None else MAX_CANDIDATES for n, row, _lat, _lon in searches
    }
    params = {
        "tenant_ids": [tenant_id],
        "radius_m": radius_m,
        "searches": [
            {
                "n": n,
                "service_code": row["service_code"],
                "cells": cells[n],
                "lat": lat,
                "lon": lon,
                "max_rows": max_rows[n],
            }
            for n, row, lat, lon in searches
        ],
    }
    for row in session.connection().execute(_OPEN_NEARBY_EACH, params):
        found[row.n].append(row)
    for n, row, lat, lon in searches:
        rows = found[n]
        if max_rows[n] == 1 and rows and _oldest_within(rows, lat, lon, radius_m, "") is None:
            found[n] = _nearby(session, tenant_id, row["service_code"], cells[n])
    return found


def _nearby(session: Session, tenant_id: str, service_code: str, cells: list[str]) -> list[Row]:
    params = {"tenant_ids": [tenant_id], "service_code": service_code, "cells": cells}
    return list(session.connection().execute(_OPEN_NEARBY, params))


def link_duplicates(
    session: Session,
    tenant: TenantSnapshot,
    rows: Sequence[dict[str, Any]],
    points: Sequence[tuple[float, float] | None],
) -> None:
    """Set `duplicate_of` of new request rows, not written yet, that have an open duplicate.

    A row with a point links to the oldest open request of its service within the radius:
    a stored one first, else a row before it in `rows`, which are newer than any stored one.
    """
    readable = readable_tenant(session, tenant.id)
    if readable is None:
        return
    radius = duplicate_radius_m(tenant)
    searches = [
        (n, row, *point) for n, (row, point) in enumerate(zip(rows, points, strict=True)) if point
    ]
    if not searches:
        return
    # The storage cells around each point, which both the locks and the query use.
    cells = {n: geo.cells_within(lat, lon, radius) for n, _row, lat, lon in searches}
    if is_postgres(session):
        _lock_search_areas(session, readable, searches, cells)
    stored = _candidates_each(session, readable, searches, cells, radius)
    for n, row, lat, lon in searches:
        match = _oldest_within(stored[n], lat, lon, radius, row["id"])
        if match is None:
            earlier = (
                SimpleNamespace(**other)
                for other in rows[:n]
                if other["service_code"] == row["service_code"]
            )
            match = _oldest_within(earlier, lat, lon, radius, row["id"])
        original = _link_target(match)
        if original is not None:
            row["duplicate_of"] = original
            # The caller's `request_submitted` line names the link, so intake logs one line
            # per request instead of two.
            DUPLICATES_LINKED.labels(tenant=tenant.id, scope="tenant").inc()


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
