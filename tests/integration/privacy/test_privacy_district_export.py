"""The open-data `district` rule publishes the district that intake found for the exact point."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from open311_support import CENTRE, box_polygon, manifest_data
from sqlalchemy import Engine

from hub.core.db import unit_of_work
from hub.core.tenancy import ROLE_ADMIN, SystemContext, TenantContext
from hub.requests.models import ServiceRequest
from hub.requests.schemas import IntakeData
from hub.requests.service import submit_request
from hub.requests.transfer import transfer_request
from privacy.export import open_data_export
from privacy.open_data import write_export
from privacy.tasks import run_retention_purge
from tenants.manifest import parse_manifest
from tenants.onboarding import onboard_manifest
from tenants.registry import TenantInfo, get_tenant

LAT, LON = CENTRE
# Points inside the test service area: in the north district, and in no district.
NORTH = (LAT + 0.02, LON)
NOWHERE = (LAT - 0.02, LON + 0.02)
FILED_AT = datetime(2024, 3, 1, 12, tzinfo=UTC)


def onboard_with_districts(engine: Engine, prefix: str) -> TenantInfo:
    """Onboard a test city whose north half and south-west quarter are districts, with a
    location-sensitive `heat` service published by district."""
    tenant_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    data = manifest_data(tenant_id, f"{tenant_id}.example.org", region=None)
    data["districts"] = [
        {
            "code": f"{prefix}-north",
            "name": f"{prefix} North",
            "geometry": box_polygon(LON - 0.05, LAT, LON + 0.05, LAT + 0.05),
        },
        {
            "code": f"{prefix}-south-west",
            "name": f"{prefix} South-West",
            "geometry": box_polygon(LON - 0.05, LAT - 0.05, LON, LAT),
        },
    ]
    data["services"].append(
        {
            "code": "heat",
            "names": {"en": "No heat", "es": "Sin calefacción"},
            "location_sensitive": True,
            "open_data": {"location": "district"},
        }
    )
    with unit_of_work(SystemContext("test setup"), engine=engine) as session:
        onboard_manifest(session, parse_manifest(data))
    tenant = get_tenant(tenant_id, engine=engine)
    assert tenant is not None
    return tenant


def file_heat(engine: Engine, tenant: TenantInfo, point: tuple[float, float], count: int) -> list:
    ids = []
    ctx = TenantContext(tenant.id, actor="test")
    with unit_of_work(ctx, engine=engine) as session:
        for _ in range(count):
            data = IntakeData(
                service_code="heat", lat=point[0], lon=point[1], requested_at=FILED_AT
            )
            ids.append(submit_request(session, ctx, tenant, data).id)
    return ids


def export_records(engine: Engine, tenant_id: str) -> list[dict]:
    """Return the tenant's open-data records, published with their Open311 ids."""
    ctx = TenantContext(tenant_id, actor="cli:operator", roles=frozenset({ROLE_ADMIN}))
    with unit_of_work(ctx, engine=engine) as session:
        return open_data_export(session, ctx, ids="open311").records


def stored_rows(engine: Engine, tenant_id: str, ids: list[str]) -> list[ServiceRequest]:
    with unit_of_work(TenantContext(tenant_id), engine=engine) as session:
        rows = [session.get(ServiceRequest, request_id) for request_id in ids]
        session.expunge_all()
    return rows


def test_sensitive_request_published_by_district(engine):
    tenant = onboard_with_districts(engine, "dist")
    inside = file_heat(engine, tenant, NORTH, 5)
    outside = file_heat(engine, tenant, NOWHERE, 5)

    rows = stored_rows(engine, tenant.id, inside + outside)
    assert {row.district for row in rows[:5]} == {"dist-north"}
    assert {row.district for row in rows[5:]} == {None}
    assert {(row.lat, row.lon) for row in rows} == {(None, None)}

    by_id = {record["id"]: record for record in export_records(engine, tenant.id)}
    assert {by_id[i]["location_cell"] for i in inside} == {"district:dist North"}
    assert {by_id[i]["district"] for i in inside} == {"dist North"}
    assert {by_id[i]["location_cell"] for i in outside} == {"withheld"}
    assert {(r["lat"], r["lon"]) for r in by_id.values()} == {(None, None)}


def test_export_meta_states_tenant_and_rules(engine, tmp_path):
    tenant = onboard_with_districts(engine, "meta")
    file_heat(engine, tenant, NORTH, 5)
    ctx = TenantContext(tenant.id, actor="cli:operator", roles=frozenset({ROLE_ADMIN}))
    with unit_of_work(ctx, engine=engine) as session:
        export = open_data_export(session, ctx)
    write_export(export, tmp_path / "open.geojson", "geojson")

    meta = json.loads((tmp_path / "open.geojson.meta.json").read_text())
    assert meta["tenant_id"] == tenant.id
    assert meta["date_range"]["first_time_bucket"] == "2024-03-01T00:00:00+00:00"
    assert meta["date_range"]["last_time_bucket"] == "2024-03-01T00:00:00+00:00"
    assert meta["location_rules"]["services"]["heat"] == {"location": "district"}
    assert meta["location_rules"]["services"]["pothole"]["location"] == "h3"
    assert meta["k"] == 5
    assert meta["free_text"] == "withheld"


def test_district_kept_after_retention_purge(engine, close_expired):
    tenant = onboard_with_districts(engine, "kept")
    ids = file_heat(engine, tenant, NORTH, 5)
    for request_id in ids:
        close_expired(engine, tenant.id, request_id)

    assert run_retention_purge(tenant.id, engine=engine)["service_requests"] == 5

    assert {row.location_enc for row in stored_rows(engine, tenant.id, ids)} == {None}
    published = export_records(engine, tenant.id)
    assert {r["location_cell"] for r in published} == {"district:kept North"}


def test_transfer_takes_target_district(engine):
    source = onboard_with_districts(engine, "from")
    target = onboard_with_districts(engine, "to")
    moved, to_h3 = file_heat(engine, source, NORTH, 2)

    with unit_of_work(SystemContext("test transfer"), engine=engine) as session:
        transfer_request(session, TenantContext(source.id, actor="test"), target, moved)
        transfer_request(
            session, TenantContext(source.id, actor="test"), target, to_h3, service_code="graffiti"
        )

    moved_row, h3_row = stored_rows(engine, target.id, [moved, to_h3])
    assert moved_row.district == "to-north"
    assert moved_row.lat is None
    assert h3_row.district is None
    assert h3_row.lat is not None
